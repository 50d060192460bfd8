/**
 * The uid / processName / processPath rule keys in the configuration: the
 * schema's forms (with errors naming the field), and the warning `sluice
 * check` prints when such a rule can never see a flow from this machine
 * (route.auto off).
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCheck } from '../../src/commands/check.js';

async function check(t: Test, yaml: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-owner-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'c.yaml');
  writeFileSync(file, yaml);
  let stdout = '';
  let stderr = '';
  const code = await runCheck(['--config', file], { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } });
  return { code, stdout, stderr };
}

const base = `
outbounds: [ { name: direct, type: direct }, { name: block, type: reject } ]
`;

t.test('owner rules with route.auto pass without a warning', async (t) => {
  const r = await check(t, `${base}route: { auto: true }\nrules:\n  - { uid: [4242], outbound: block }\n  - { processName: [curl], processPath: [/usr/bin/curl], outbound: block }\n`);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
});

t.test('owner rules without route.auto are valid but warned about', async (t) => {
  const r = await check(t, `${base}rules:\n  - { port: [443], outbound: direct }\n  - { and: [ { uid: [4242] } ], outbound: block }\n`);
  t.equal(r.code, 0, 'still valid');
  t.match(r.stderr, /^warning: .*: rules\[1\]\.and\[0\]\.uid: uid \/ processName \/ processPath hold only for flows from this machine.*route\.auto is off/m, r.stderr);
  t.match(r.stderr, /never gateway or TPROXY flows/);
});

t.test('bad owner values name the field', async (t) => {
  for (const [rule, field] of [
    ['{ uid: [-1], outbound: block }', 'rules[0].uid[0]'],
    ['{ uid: [root], outbound: block }', 'rules[0].uid[0]'],
    ['{ processName: [bin/curl], outbound: block }', 'rules[0].processName[0]'],
    ['{ processPath: [curl], outbound: block }', 'rules[0].processPath[0]'],
  ] as const) {
    const r = await check(t, `${base}route: { auto: true }\nrules:\n  - ${rule}\n`);
    t.equal(r.code, 1, `${rule} is refused`);
    t.match(r.stderr, field, `the error names ${field}: ${r.stderr.split('\n')[0]}`);
  }
});
