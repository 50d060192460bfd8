/**
 * Configuration errors: every mistake found in one load, each naming the
 * file, the line and column, the field path and what was expected.
 */
import { SluiceError } from '../errors.js';

export interface ConfigProblem {
  /** The file the mistake is in: the config file, or a rule-set file. */
  file: string;
  /** 1-based; 0 when the mistake concerns the whole file (e.g. it cannot be read). */
  line: number;
  /** 1-based; 0 when unknown. */
  column: number;
  /** Field path such as `rules[3].ipCidr[1]`; "" for the document itself. */
  path: string;
  message: string;
}

/** `file:line:column: path: message`, leaving out the parts that are unknown or empty. */
export function formatProblem(p: ConfigProblem): string {
  let where = p.file;
  if (p.line > 0) where += `:${p.line}`;
  if (p.line > 0 && p.column > 0) where += `:${p.column}`;
  return p.path === '' ? `${where}: ${p.message}` : `${where}: ${p.path}: ${p.message}`;
}

export class ConfigError extends SluiceError {
  readonly code = 'SLUICE_CONFIG';
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function isConfigError(err: unknown): err is ConfigError {
  return err instanceof Error && (err as { code?: unknown }).code === 'SLUICE_CONFIG';
}
