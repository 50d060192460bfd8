/**
 * What `sluice run` says (issue 12 item 10):
 *   - log.level debug adds a line at each decision point: flow accepted,
 *     sniff result, rule matched, dial start, dial failed, DNS query and
 *     answer, reload; at info none of them appear;
 *   - a tun.name held by an interface that is not a TUN device is refused
 *     naming the field and the interface's type, not with a bare EINVAL.
 *
 * Needs root, /dev/net/tun, ip, curl, dig, dnsmasq.
 */
import t from 'tap';
import path from 'node:path';
import type { Test } from 'tap';
import { requireRoot } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { createLab, curl, describe, requireCommands, startDnsmasq, startWebServer, tempDir, TUN } from '../fixtures/engine/lab.js';
import { settle, spawnSluice } from './workstation.js';

function config(level: 'debug' | 'info'): string {
  return `
log: { level: ${level}, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, fakeIp: { persistPath: null }, upstreams: [ { address: "udp://${SERVER_V4}:53" } ] }
rules:
  - { domainSuffix: [never.example], outbound: direct }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
`;
}

const DEBUG_LINES = ['flow accepted', 'sniff result', 'rule matched', 'dial start', 'dial failed', 'dns query', 'dns answer', 'reload details'];

async function drive(t: Test, level: 'debug' | 'info'): Promise<string[]> {
  const lab = await createLab(t, level === 'debug' ? 'logdebug' : 'loginfoo');
  const { client, gateway, server } = await threeNamespaces(lab);
  await settle(gateway);
  await startWebServer(t, server);
  await startDnsmasq(t, server, { 'some.test': '192.0.2.99' });
  const dir = tempDir(t, `log${level}`);
  const engine = spawnSluice(t, gateway, dir, config(level), path.join(dir, 'state.json'));
  await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
  const ok = await curl(client, [`http://${SERVER_V4}/`]);
  t.equal(ok.code, 0, `curl through sluice (${describe(ok)})`);
  // Nothing listens on 81: the dial fails.
  const refused = await curl(client, ['-o', '/dev/null', `http://${SERVER_V4}:81/`]);
  t.not(refused.code, 0, 'curl to a closed port fails');
  const dig = await client.exec(['dig', '+short', '+tries=1', '+time=5', `@${SERVER_V4}`, 'some.test', 'A'], { allowFail: true, timeoutMs: 15_000 });
  t.equal(dig.stdout.trim(), '192.0.2.99', 'the hijack answered');
  engine.proc.kill('SIGHUP');
  await engine.waitFor((l) => l.msg === 'reloaded', 5000, '"reloaded"');
  await engine.waitForFlow({ dst: `${SERVER_V4}:81` });
  t.equal((await engine.stop()).code, 0, 'stops with 0');
  return engine.lines.map((l) => String(l.msg));
}

t.test('log.level debug logs the decisions; info does not', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'curl', 'dig', '/usr/sbin/dnsmasq'])) return;
  await t.test('debug', async (t) => {
    const msgs = await drive(t, 'debug');
    for (const m of DEBUG_LINES) t.ok(msgs.includes(m), `a "${m}" line`);
  });
  await t.test('info', async (t) => {
    const msgs = await drive(t, 'info');
    t.same(DEBUG_LINES.filter((m) => msgs.includes(m)), [], 'no debug lines');
    t.ok(msgs.includes('flow'), 'flow lines as usual');
  });
});

t.test('a tun.name held by a veth is refused naming tun.name and the type', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip'])) return;
  const lab = await createLab(t, 'tunnamex');
  const ns = await lab.netns('ws');
  await ns.exec(['ip', 'link', 'add', TUN, 'type', 'veth', 'peer', 'name', `${TUN}peer`]);
  const dir = tempDir(t, 'tunname');
  const engine = spawnSluice(t, ns, dir, `log: { level: info, format: json }\ntun: { name: ${TUN} }\ndns: { fakeIp: { persistPath: null } }\n`, path.join(dir, 'state.json'));
  const exit = await engine.exited;
  t.equal(exit.code, 1, 'sluice run exits 1');
  t.match(engine.stderr, new RegExp(`tun\\.name: interface ${TUN} exists and is not a TUN device \\(type veth\\)`), `names the field and the type: ${engine.stderr.trim()}`);
  t.notMatch(engine.stderr, /EINVAL/, 'no bare EINVAL');
  t.match(await ns.sh(`ip -d link show dev ${TUN}`), /veth/, 'the veth is untouched');
});
