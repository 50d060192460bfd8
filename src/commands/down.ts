/**
 * `sluice down [--state FILE]`: remove the routes, rules and nftables table
 * a killed `sluice run` left behind, as listed in its state file, without
 * starting anything. Exit codes: 0 removed (or nothing to remove), 1 could
 * not remove (or the run is still alive), 2 usage.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_STATE_PATH } from '../system/state.js';
import { teardownFile } from '../system/teardown.js';
import type { CommandIo } from './check.js';

export const DOWN_USAGE = `Usage: sluice down [--state FILE]

Removes what a crashed or killed "sluice run" installed (routes, ip rules,
nftables tables, tc filters, changed sysctls), exactly as its state file lists them
(default ${DEFAULT_STATE_PATH}). Things already gone are skipped.`;

export async function runDown(argv: string[], io: CommandIo = process): Promise<number> {
  let values: { state?: string | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { state: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    io.stderr.write(`sluice down: ${(err as Error).message}\n\n${DOWN_USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    io.stdout.write(`${DOWN_USAGE}\n`);
    return 0;
  }
  const path = values.state ?? DEFAULT_STATE_PATH;
  try {
    const result = await teardownFile(path);
    if (result === null) io.stdout.write(`sluice down: no state file at ${path}; nothing to remove\n`);
    else io.stdout.write(`sluice down: removed ${result.removed} entr${result.removed === 1 ? 'y' : 'ies'} (${result.alreadyGone} already gone); ${path} deleted\n`);
    return 0;
  } catch (err) {
    io.stderr.write(`sluice down: ${(err as Error).message}\n`);
    return 1;
  }
}
