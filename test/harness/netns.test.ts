import t from 'tap';
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Lab, requireRoot, sweepStaleNamespaces, waitForJsonLine } from './netns.js';

t.test('two namespaces joined by a veth pair reach each other and vanish at teardown', async (t) => {
  if (!requireRoot(t)) return;
  const names: string[] = [];
  await t.test('inner', async (t) => {
    const lab = await Lab.create(t, 'harness');
    const a = await lab.netns('a');
    const b = await lab.netns('b');
    names.push(a.name, b.name);
    await lab.veth(a, 'va', b, 'vb', { a: ['192.0.2.1/24', '2001:db8::1/64'], b: ['192.0.2.2/24', '2001:db8::2/64'] });
    const v4 = await a.exec(['ping', '-c', '1', '-W', '2', '192.0.2.2']);
    t.equal(v4.code, 0, 'IPv4 ping across the veth');
    const v6 = await a.exec(['ping', '-6', '-c', '1', '-W', '2', '2001:db8::2']);
    t.equal(v6.code, 0, 'IPv6 ping across the veth');
    const failed = await a.exec(['false'], { allowFail: true });
    t.equal(failed.code, 1, 'allowFail resolves with the exit status');
    await t.rejects(a.exec(['false']), { code: 'SLUICE_HARNESS' }, 'a failing command rejects');
    const child = a.spawn(['sh', '-c', 'echo \'{"ready":true}\'; exec sleep 60']);
    const line = await waitForJsonLine<{ ready: boolean }>(child, (m) => m.ready);
    t.same(line, { ready: true }, 'fixture lines are read as JSON');
    t.ok(existsSync(`/var/run/netns/${a.name}`));
  });
  for (const name of names) t.notOk(existsSync(`/var/run/netns/${name}`), `${name} removed at teardown`);
});

t.test('namespaces left by a dead run are swept', async (t) => {
  if (!requireRoot(t)) return;
  // A PID far above pid_max cannot be alive.
  const stale = 'slharness-4999999x0';
  execFileSync('ip', ['netns', 'add', stale]);
  t.teardown(() => {
    if (existsSync(`/var/run/netns/${stale}`)) execFileSync('ip', ['netns', 'del', stale]);
  });
  const removed = sweepStaleNamespaces();
  t.ok(removed.includes(stale), 'the stale namespace was removed');
  t.notOk(existsSync(`/var/run/netns/${stale}`));
});

t.test('the three-namespace topology routes client to server through the gateway', async (t) => {
  if (!requireRoot(t)) return;
  const { threeNamespaces, SERVER_V4, SERVER_V6 } = await import('./topology.js');
  const lab = await Lab.create(t, 'topo');
  const { client } = await threeNamespaces(lab);
  t.equal((await client.exec(['ping', '-c', '1', '-W', '2', SERVER_V4])).code, 0, 'IPv4 through the gateway');
  t.equal((await client.exec(['ping', '-6', '-c', '1', '-W', '2', SERVER_V6])).code, 0, 'IPv6 through the gateway');
});
