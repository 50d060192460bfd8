/**
 * Running the system tools (`ip`, `nft`) that change routing state. The
 * runner is injected so the planning and rollback logic can be tested
 * without touching a machine.
 */
import { SluiceError } from '../errors.js';
import { spawn } from 'node:child_process';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv (with `input` on stdin); never rejects on a non-zero exit. */
export type Runner = (argv: readonly string[], input?: string) => Promise<CommandResult>;

/** Output kept per stream (a bound against a runaway tool). */
const MAX_OUTPUT = 1 << 20;

export const runCommand: Runner = (argv, input) =>
  new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      if (stdout.length < MAX_OUTPUT) stdout += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < MAX_OUTPUT) stderr += d.toString('utf8');
    });
    // A tool that exits early closes its stdin; the EPIPE is not ours to report.
    child.stdin.on('error', () => {});
    child.once('error', (err) => resolve({ code: 127, stdout, stderr: `${argv[0]!}: ${err.message}` }));
    child.once('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });

/** Errors with a stable code, as the rest of sluice uses. */
export class SystemStateError extends SluiceError {
  constructor(
    readonly code: 'PREFLIGHT_COLLISION' | 'APPLY_FAILED' | 'TEARDOWN_FAILED' | 'STATE_FILE' | 'STATE_BUSY',
    message: string,
  ) {
    super(message);
    this.name = 'SystemStateError';
  }
}
