/**
 * `sluice check --config FILE`: validate a configuration and its rule-set
 * files, print a one-line summary or every problem, and touch nothing else
 * (no devices, routes or sockets). Beyond the file itself it checks that
 * run.user and run.group exist on this machine, with the text `sluice run`
 * would fail with.
 *
 * Exit codes: 0 valid, 1 the configuration has problems, 2 usage error.
 */
import { parseArgs } from 'node:util';
import { isConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import { configWarnings } from '../config/warnings.js';
import { isGroupConfig } from '../config/types.js';
import { PrivilegeError, resolveRunIdentity } from '../system/privileges.js';

export const CHECK_USAGE = `Usage: sluice check --config FILE

Validates FILE and the rule-set files it names, without touching the system.
Prints "ok: FILE (...)" and exits 0, or lists every problem as
file:line:column: field: message on stderr and exits 1.`;

export interface CommandIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

export async function runCheck(argv: string[], io: CommandIo = process): Promise<number> {
  let config: string | undefined;
  let help: boolean | undefined;
  try {
    ({
      values: { config, help },
    } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    io.stderr.write(`sluice check: ${(err as Error).message}\n\n${CHECK_USAGE}\n`);
    return 2;
  }
  if (help === true) {
    io.stdout.write(`${CHECK_USAGE}\n`);
    return 0;
  }
  if (config === undefined || config === '') {
    io.stderr.write(`sluice check: --config FILE is required\n\n${CHECK_USAGE}\n`);
    return 2;
  }
  try {
    const cfg = await loadConfig(config);
    const groups = cfg.outbounds.filter(isGroupConfig).length;
    const summary = [
      plural(cfg.rules.length, 'rule', 'rules'),
      plural(cfg.outbounds.length, 'outbound', 'outbounds') + (groups > 0 ? ` (${plural(groups, 'group', 'groups')})` : ''),
      plural(Object.keys(cfg.ruleSets).length, 'rule set', 'rule sets'),
    ].join(', ');
    for (const w of configWarnings(cfg)) io.stderr.write(`warning: ${config}: ${w}\n`);
    // run.user / run.group must exist on this machine: the same check and text as `sluice run`
    // (the checks that need root, capabilities and directory ownership, stay with run).
    try {
      resolveRunIdentity(cfg, config);
    } catch (err) {
      if (!(err instanceof PrivilegeError)) throw err;
      io.stderr.write(`${err.message}\nsluice check: ${config}: 1 problem\n`);
      return 1;
    }
    io.stdout.write(`ok: ${config} (${summary})\n`);
    return 0;
  } catch (err) {
    if (!isConfigError(err)) throw err;
    io.stderr.write(`${err.message}\nsluice check: ${config}: ${plural(err.problems.length, 'problem', 'problems')}\n`);
    return 1;
  }
}
