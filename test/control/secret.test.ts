/** The generated API secret: made once with mode 0600, read back, tightened, refused when garbage. */
import t from 'tap';
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateSecret, secretPath } from '../../src/control/secret.js';

function dir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'sluice-secret-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test('created at first start, then read back', async (t) => {
  const d = dir(t);
  const p = join(d, 'sub', 'api-secret');
  const a = loadOrCreateSecret(p);
  t.equal(a.created, true, 'created');
  t.match(a.secret, /^[0-9a-f]{64}$/, '32 random bytes in hex');
  t.equal(statSync(p).mode & 0o777, 0o600, 'mode 0600');
  t.equal(statSync(join(d, 'sub')).mode & 0o777, 0o700, 'its new directory 0700');
  const b = loadOrCreateSecret(p);
  t.same({ created: b.created, secret: b.secret }, { created: false, secret: a.secret }, 'the same secret on the next start');
  t.same(readdirSync(join(d, 'sub')), ['api-secret'], 'no temporary file left');
  t.not(loadOrCreateSecret(join(d, 'other')).secret, a.secret, 'another file, another secret');
});

t.test('a file readable by others is tightened; an empty or odd one is refused naming api.secretFile', async (t) => {
  const d = dir(t);
  const p = join(d, 's');
  writeFileSync(p, 'mysecret\n');
  chmodSync(p, 0o644);
  const r = loadOrCreateSecret(p);
  t.same(r, { secret: 'mysecret', created: false, tightened: true });
  t.equal(statSync(p).mode & 0o777, 0o600, 'now 0600');
  writeFileSync(p, '\n');
  t.throws(() => loadOrCreateSecret(p), /api\.secretFile: .* does not hold a secret/);
  writeFileSync(p, 'two words\n');
  t.throws(() => loadOrCreateSecret(p), /api\.secretFile/);
  t.throws(() => loadOrCreateSecret(join(d)), /api\.secretFile: cannot read/, 'a directory');
});

t.test('the default path: beside a --state file, else /var/lib/sluice', async (t) => {
  t.equal(secretPath(null, '/tmp/x/state.json'), '/tmp/x/api-secret');
  t.equal(secretPath(null, '/run/sluice/state.json'), '/var/lib/sluice/api-secret', 'the default state file is on tmpfs: the secret goes where it survives a reboot');
  t.equal(secretPath('/etc/sluice/secret', '/var/lib/sluice/state.json'), '/etc/sluice/secret');
});
