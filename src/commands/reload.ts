/**
 * `sluice reload`: asks the running sluice to re-read its configuration
 * (POST /v1/reload on the control API) and prints what changed, or why the
 * new configuration was refused (the running one stays in force).
 *
 * Exit codes: 0 reloaded, 1 refused or the API could not be reached, 2 usage.
 */
import { parseArgs } from 'node:util';
import type { CommandIo } from './check.js';
import { request, resolveTarget, runControl, TARGET_OPTIONS, TARGET_USAGE, messageOf } from '../control/client.js';

export const RELOAD_USAGE = `Usage: sluice reload [--json] [options]

Makes the running sluice re-read its configuration file (as SIGHUP does)
and prints what changed; a configuration with problems is refused, its
problems printed, and the running one kept (exit 1).
  --json                 print the API's answer as JSON
${TARGET_USAGE}`;

/** The lines worth printing from a reload answer, whatever its exact shape. */
export function describeReload(body: unknown): string[] {
  if (body === null || typeof body !== 'object') return typeof body === 'string' && body !== '' ? [body] : [];
  const b = body as Record<string, unknown>;
  const out: string[] = [];
  const message = messageOf(body);
  // The message repeats the errors on one line; they are listed one by one below.
  if (message !== null && !(Array.isArray(b.errors) && b.errors.length > 0)) out.push(message);
  // sluice's own shape: changes.ruleSets.NAME = {before, after} entry counts.
  const sets = (b.changes as { ruleSets?: Record<string, { before?: number; after?: number }> } | undefined)?.ruleSets;
  if (sets !== undefined && sets !== null && typeof sets === 'object') {
    const names = Object.keys(sets);
    for (const n of names) out.push(`  rule set ${n}: ${sets[n]?.before ?? '?'} -> ${sets[n]?.after ?? '?'} entries`);
    if (names.length === 0) out.push('  no rule set changed');
  }
  for (const key of ['changed', 'changes', 'problems', 'errors', 'warnings']) {
    if (key === 'changes' && sets !== undefined) continue;
    const v = b[key];
    if (Array.isArray(v)) for (const item of v) out.push(`  ${key === 'changed' || key === 'changes' ? 'changed' : key.replace(/s$/, '')}: ${typeof item === 'string' ? item : JSON.stringify(item)}`);
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(`  ${k}: ${typeof x === 'string' ? x : JSON.stringify(x)}`);
  }
  return out;
}

export async function runReload(argv: string[], io: CommandIo = process): Promise<number> {
  return runControl('reload', RELOAD_USAGE, io, async () => {
    const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { ...TARGET_OPTIONS, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
    if (values.help === true) {
      io.stdout.write(`${RELOAD_USAGE}\n`);
      return 0;
    }
    const target = await resolveTarget(values);
    const r = await request(target, 'POST', '/v1/reload');
    const ok = r.status >= 200 && r.status <= 299 && !(r.body !== null && typeof r.body === 'object' && (r.body as { ok?: unknown }).ok === false);
    if (values.json === true) {
      (ok ? io.stdout : io.stderr).write(`${r.text === '' ? 'null' : r.text}\n`);
      return ok ? 0 : 1;
    }
    const lines = describeReload(r.body);
    if (ok) io.stdout.write(`reloaded${lines.length > 0 ? `\n${lines.join('\n')}` : ''}\n`);
    else io.stderr.write(`sluice reload: refused (${r.status}); the running configuration stays${lines.length > 0 ? `\n${lines.join('\n')}` : ''}\n`);
    return ok ? 0 : 1;
  });
}
