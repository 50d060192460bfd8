/**
 * The configuration schema's validator, compiled by ajv at build time
 * (build-validator.ts writes dist/src/config/config-validator.cjs). It is
 * loaded for each check and let go of after it: a configuration is checked
 * at start, on `sluice check` and on a reload, and between those the module
 * (500 KB of source and the bytecode made from it, ~1.5 MB of heap) would
 * only sit in memory. A fresh load costs ~10 ms.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { compileFunction } from 'node:vm';
import type { ValidateFunction } from 'ajv/dist/2020.js';

const require = createRequire(import.meta.url);
const MODULE = new URL('./config-validator.cjs', import.meta.url);

export interface BuiltValidator {
  validate: ValidateFunction;
  /** SHA-256 of the schema the module was built from (build-validator.ts schemaDigest). */
  schemaDigest: string;
}

/**
 * Loads the built validator; the caller drops it when done, and nothing else
 * keeps it. Compiled here as a CommonJS function body, not through require():
 * the module loader would keep it (its cache, and the requiring module's
 * `children`), and with it the source and all its code.
 */
export function loadValidator(): BuiltValidator {
  let source: string;
  try {
    source = readFileSync(MODULE, 'utf8');
  } catch (err) {
    throw new Error(`the configuration validator ${MODULE.pathname} is missing (${(err as Error).message}): it is made by npm run build`);
  }
  const body = compileFunction(source, ['exports', 'require', 'module'], { filename: MODULE.pathname });
  const module = { exports: {} as unknown };
  body(module.exports, require, module);
  const validate = module.exports as ValidateFunction & { schemaDigest: string };
  return { validate, schemaDigest: validate.schemaDigest };
}
