/**
 * The eBPF TC classifier in a gateway namespace: flows to a proxied prefix
 * are marked and policy-routed into the TUN (the stack relays them), flows
 * to a bypass prefix take the kernel path (classifier counters rise, the
 * TUN sees nothing), a live map update moves a prefix from one side to the
 * other without detaching, a port rule drops, and closing leaves the
 * interface's tc state as it was.
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { Lab, requireRoot, waitForJsonLine, hasCommand } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { blobSha256 } from '../fixtures/blob.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const gatewayFixture = path.resolve(here, '../fixtures/bpf-gateway.js');
const blobServer = path.resolve(here, '../fixtures/blob-server.js');
const BYPASS_V4 = '203.0.113.130';

interface Stats {
  event: string;
  counters: Record<'kernel' | 'tun' | 'tproxy' | 'drop', { packets: number; bytes: number }>;
  relayed: number;
  tun: { rxPackets: number };
}

async function command<T extends { event: string }>(gw: ChildProcess, c: object): Promise<T> {
  const p = waitForJsonLine<T>(gw, (m) => m.event !== undefined && m.event !== 'ready');
  gw.stdin!.write(JSON.stringify(c) + '\n');
  const r = await p;
  if (r.event === 'error') throw new Error(JSON.stringify(r));
  return r;
}

t.test('the classifier sends a proxied prefix into the TUN, a bypass prefix through the kernel, and moves prefixes live', async (t) => {
  if (!requireRoot(t)) return;
  if (!hasCommand('tc')) return t.fail('tc (iproute2) is needed');
  const lab = await Lab.create(t, 'bpfcls');
  const { client, gateway, server } = await threeNamespaces(lab);
  await server.exec(['ip', 'addr', 'add', `${BYPASS_V4}/24`, 'dev', 'eth0']);
  const srv = server.spawn([process.execPath, blobServer, '8080']);
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const tcBefore = await gateway.sh('tc qdisc show dev lan0; tc filter show dev lan0 ingress');

  const gw = gateway.spawn([process.execPath, gatewayFixture, '--tun', 'sl0', '--lan', 'lan0', '--tun-mark', '1'], { stdio: ['pipe', 'pipe', 'pipe'] });
  await waitForJsonLine(gw, (m: { event?: string }) => m.event === 'ready');
  // Marked packets are routed into the TUN; everything else by the main table.
  await gateway.ipBatch(['route add 0.0.0.0/0 dev sl0 table 100', 'route add ::/0 dev sl0 table 100', 'rule add fwmark 1 lookup 100 priority 1000']);
  await gateway.exec(['ip', '-6', 'rule', 'add', 'fwmark', '1', 'lookup', '100', 'priority', '1000']);
  await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.sl0.rp_filter=0');
  t.match(await gateway.sh('tc filter show dev lan0 ingress'), /sluice_classify|bpf/, 'the classifier is attached at lan0 ingress');

  await command(gw, { op: 'prefix', cidr: '203.0.113.0/25', action: 'tun' });
  await command(gw, { op: 'prefix', cidr: '2001:db8:5::/64', action: 'tun' });
  const fetch = async (host: string, port = 8080, size = 200_000): Promise<string> =>
    (await client.sh(`curl -sS --max-time 10 http://${host}:${port}/bytes/${size} | sha256sum`, { timeoutMs: 15_000 })).split(' ')[0]!;

  const s0 = await command<Stats>(gw, { op: 'stats' });
  t.equal(await fetch(SERVER_V4), blobSha256(200_000), 'proxied prefix: download intact');
  const s1 = await command<Stats>(gw, { op: 'stats' });
  t.equal(s1.relayed, s0.relayed + 1, 'the flow went through the stack');
  t.ok(s1.counters.tun.packets > s0.counters.tun.packets, `classifier counted it as tun (${s1.counters.tun.packets} packets)`);

  t.equal(await fetch(BYPASS_V4), blobSha256(200_000), 'bypass prefix: download intact');
  const s2 = await command<Stats>(gw, { op: 'stats' });
  t.equal(s2.relayed, s1.relayed, 'not through the stack');
  // A few packets of the kernel's own IPv6 housekeeping (router solicitation,
  // MLD) may cross a fresh TUN; a 200 KB download would be dozens.
  t.ok(s2.tun.rxPackets - s1.tun.rxPackets <= 3, `the TUN saw none of its packets (${s1.tun.rxPackets} -> ${s2.tun.rxPackets})`);
  t.ok(s2.counters.kernel.packets > s1.counters.kernel.packets + 5, `classifier counted the kernel path (${s2.counters.kernel.packets - s1.counters.kernel.packets} packets)`);

  await command(gw, { op: 'port', protocol: 'tcp', port: 9999, action: 'drop' });
  const dropped = await client.exec(['curl', '-sS', '--max-time', '2', `http://${BYPASS_V4}:9999/`], { allowFail: true });
  t.equal(dropped.code, 28, 'a dropped port times out (curl exit 28)');
  const s3 = await command<Stats>(gw, { op: 'stats' });
  t.ok(s3.counters.drop.packets > s2.counters.drop.packets, 'and is counted as drop');

  // Live: the bypass half joins the proxied side without detaching anything.
  await command(gw, { op: 'prefix', cidr: '203.0.113.128/25', action: 'tun' });
  t.equal(await fetch(BYPASS_V4), blobSha256(200_000), 'after the live update: download intact');
  const s4 = await command<Stats>(gw, { op: 'stats' });
  t.equal(s4.relayed, s3.relayed + 1, 'and now through the stack');

  t.equal(await fetch(`[${SERVER_V6}]`), blobSha256(200_000), 'IPv6 proxied prefix: download intact');
  const s5 = await command<Stats>(gw, { op: 'stats' });
  t.equal(s5.relayed, s4.relayed + 1, 'through the stack');

  await command(gw, { op: 'close' });
  t.equal(await gateway.sh('tc qdisc show dev lan0; tc filter show dev lan0 ingress'), tcBefore, 'tc state on lan0 is as it was');
  gw.kill('SIGTERM');
});
