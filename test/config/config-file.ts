/**
 * What the config section tests share: a sluice.yaml in a fresh directory
 * (removed at teardown), the error a text fails to load with, and the
 * check that each of a list of bad texts fails naming its field path.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isConfigError } from '../../src/config/errors.js';
import { loadConfig } from '../../src/config/load.js';

interface Teardown {
  teardown(fn: () => void): void;
}

interface Asserts extends Teardown {
  ok(value: unknown, message: string): void;
  equal(found: unknown, wanted: unknown, message: string): void;
}

/** DIR/sluice.yaml holding `text`, and DIR. */
export function configFileIn(t: Teardown, text: string): { path: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'sluice.yaml');
  writeFileSync(f, text);
  return { path: f, dir };
}

/** The path of a sluice.yaml holding `text`. */
export function configFile(t: Teardown, text: string): string {
  return configFileIn(t, text).path;
}

/** What loading `text` rejects with, or null when it loads. */
export function loadError(t: Teardown, text: string): Promise<unknown> {
  return loadConfig(configFile(t, text)).then(
    () => null,
    (e: unknown) => e,
  );
}

/** Each [text, path]: loading text fails with a config error whose first problem is at `path`. */
export async function expectFieldErrors(t: Asserts, cases: readonly (readonly [string, string])[]): Promise<void> {
  for (const [text, path] of cases) {
    const err = await loadError(t, text);
    t.ok(isConfigError(err), `${text.trim()}: a config error`);
    if (isConfigError(err)) t.equal(err.problems[0]!.path, path, `names ${path}: ${err.problems[0]!.message}`);
  }
}
