/** The `limits` section (SYN-flood and dial caps): defaults, values, errors naming the field. */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isConfigError } from '../../src/config/errors.js';
import { loadConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/types.js';

function file(t: { teardown(fn: () => void): void }, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-limits-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'sluice.yaml');
  writeFileSync(f, text);
  return f;
}

t.test('defaults, and a partial section keeps the other defaults', async (t) => {
  t.same((await loadConfig(file(t, 'log: { level: info }\n'))).limits, defaultConfig().limits);
  t.same((await loadConfig(file(t, 'limits: { synCookieThreshold: 0, dialsPerSource: 8 }\n'))).limits, { ...defaultConfig().limits, synCookieThreshold: 0, dialsPerSource: 8 });
});

t.test('a bad value or key is reported with its field path', async (t) => {
  for (const [text, path] of [
    ['limits: { dials: 0 }\n', 'limits.dials'],
    ['limits: { pendingSyns: -5 }\n', 'limits.pendingSyns'],
    ['limits: { synCookieThreshold: "many" }\n', 'limits.synCookieThreshold'],
    ['limits: { dialsPerSorce: 3 }\n', 'limits.dialsPerSorce'],
  ] as const) {
    const err = await loadConfig(file(t, text)).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(isConfigError(err), `${text.trim()}: a config error`);
    if (isConfigError(err)) t.equal(err.problems[0]!.path, path, `names ${path}: ${err.problems[0]!.message}`);
  }
});
