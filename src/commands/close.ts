/**
 * `sluice close ID... | --all`: end open flows of a running sluice at once,
 * on both sides, through its control API (DELETE /connections/:id, or
 * DELETE /connections for --all). The ids are those `sluice flows` shows.
 *
 * Exit codes: 0 every flow named was closed, 1 an id is unknown (already
 * ended) or the API could not be reached or refused, 2 usage.
 */
import { parseArgs } from 'node:util';
import type { CommandIo } from './check.js';
import { call, request, resolveTarget, runControl, TARGET_OPTIONS, TARGET_USAGE, ControlError, messageOf } from '../control/client.js';
import type { Snapshot } from '../control/flow-table.js';

export const CLOSE_USAGE = `Usage: sluice close ID... | --all [options]

Ends the flows with these ids (from "sluice flows") on both sides at once.
  --all                  end every open flow
${TARGET_USAGE}`;

export async function runClose(argv: string[], io: CommandIo = process): Promise<number> {
  return runControl('close', CLOSE_USAGE, io, async () => {
    const { values, positionals } = parseArgs({ args: argv, strict: true, allowPositionals: true, options: { ...TARGET_OPTIONS, all: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
    if (values.help === true) {
      io.stdout.write(`${CLOSE_USAGE}\n`);
      return 0;
    }
    if ((values.all === true) === positionals.length > 0) {
      io.stderr.write(`sluice close: give flow ids or --all (not both)\n\n${CLOSE_USAGE}\n`);
      return 2;
    }
    const target = await resolveTarget(values);
    if (values.all === true) {
      const before = (await call(target, 'GET', '/connections')) as Snapshot;
      await call(target, 'DELETE', '/connections');
      const n = (before.connections ?? []).length;
      io.stdout.write(`closed all flows (${n} were open)\n`);
      return 0;
    }
    let failed = 0;
    for (const id of positionals) {
      const r = await request(target, 'DELETE', `/connections/${encodeURIComponent(id)}`);
      if (r.status >= 200 && r.status <= 299) io.stdout.write(`closed ${id}\n`);
      else if (r.status === 404) {
        io.stderr.write(`sluice close: no open flow with id ${id}\n`);
        failed++;
      } else throw new ControlError(`DELETE /connections/${id}: ${r.status} ${messageOf(r.body) ?? r.text.slice(0, 200)}`, r.status);
    }
    return failed === 0 ? 0 : 1;
  });
}
