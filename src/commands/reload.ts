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
  // sluice's shape (src/commands/run-reload.ts): changes and needRestart are lists of lines.
  const changes = Array.isArray(b.changes) ? b.changes : null;
  if (changes !== null && changes.length === 0 && b.ok === true) out.push('  nothing changed');
  for (const key of ['changes', 'needRestart', 'errors', 'warnings'] as const) {
    const v = b[key];
    const label = key === 'changes' ? 'changed' : key === 'needRestart' ? 'needs a restart (kept its running value)' : key.replace(/s$/, '');
    if (Array.isArray(v)) for (const item of v) out.push(`  ${label}: ${typeof item === 'string' ? item : JSON.stringify(item)}`);
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
