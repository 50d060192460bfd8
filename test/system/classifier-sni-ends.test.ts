/**
 * The in-kernel SNI / Host filter (classifier.sni) at both ends of a denied
 * flow, and behind IPv4 options and IPv6 extension headers, in the client /
 * gateway / server topology (the server's prefixes direct by address, so
 * on the kernel path):
 *   - a denied TLS name and a denied HTTP Host over a real connection: the
 *     client is reset, and the server, which accepted the connection, sees
 *     it reset too (no data reached it, no connection is left open there);
 *     the serverResets counter moves with resets;
 *   - scapy-crafted segments carrying a ClientHello or an HTTP request with
 *     an IPv4 Record Route option, or behind IPv6 hop-by-hop and
 *     destination options headers: a denied name gets the filter's RST|ACK
 *     (from the gateway, hop limit 64, ACK = SEQ + length), an allowed one is
 *     counted as allowed (the filter found the name behind the headers).
 *
 * Needs root, /dev/net/tun, ip, tc, curl, /usr/bin/python3 with scapy, an eBPF-capable kernel.
 */
import t from 'tap';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { createLab, requireCommands, tempDir, TUN, type Engine, type LogLine } from '../fixtures/engine/lab.js';
import { startSluice } from './workstation.js';
import { craftedPacket } from '../fixtures/ext-headers.js';


type Sni = Record<'tlsAllowed' | 'tlsBlocked' | 'tlsUnseen' | 'httpAllowed' | 'httpBlocked' | 'httpUnseen' | 'quicUnseen' | 'resets' | 'serverResets', number>;

const CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false }
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
rules:
  - { ipCidr: [203.0.113.0/24, "2001:db8:5::/64"], outbound: direct }
  - { domainSuffix: [blocked.example], outbound: block }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
classifier: { enabled: true, sni: true }
`;

/** A TCP server on 80 and 443 (both families) that reports, per connection, what it saw: accepted, bytes, how it ended. */
const WATCHER = `
const net = require('net');
let n = 0;
for (const port of [80, 443]) {
  net.createServer((s) => {
    const id = ++n; let bytes = 0;
    console.log(JSON.stringify({ id, port, event: 'accept', peer: s.remoteAddress }));
    s.on('data', (d) => { bytes += d.length; });
    s.on('error', (e) => console.log(JSON.stringify({ id, port, event: 'error', code: e.code, bytes })));
    s.on('close', () => console.log(JSON.stringify({ id, port, event: 'close', bytes })));
  }).listen({ port, host: '::' }, () => { if (port === 443) console.log(JSON.stringify({ event: 'ready' })); });
}
`;

interface WatchEvent {
  id?: number;
  port?: number;
  event: string;
  code?: string;
  bytes?: number;
}

function watch(server: Netns): { proc: ChildProcess; events: WatchEvent[]; ready: Promise<void> } {
  const proc = server.spawn([process.execPath, '-e', WATCHER], { env: { ...process.env, NODE_OPTIONS: '' } });
  const events: WatchEvent[] = [];
  let buf = '';
  const ready = new Promise<void>((resolve) => {
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const e = JSON.parse(line) as WatchEvent;
        events.push(e);
        if (e.event === 'ready') resolve();
      }
    });
  });
  return { proc, events, ready };
}

async function until(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function sniCounters(engine: Engine): Promise<Sni> {
  const n = engine.lines.length;
  engine.proc.kill('SIGUSR2');
  const line = await engine.waitFor<LogLine & { classifierSni?: Sni }>((l) => l.msg === 'counters' && engine.lines.indexOf(l) >= n, 5000, 'a counters line');
  if (line.classifierSni === undefined) throw new Error(`no SNI counters in ${JSON.stringify(line)}`);
  return line.classifierSni;
}



async function setUp(t: Test, tag: string): Promise<{ client: Netns; gateway: Netns; server: Netns; engine: Engine; events: WatchEvent[] }> {
  const dir = tempDir(t, tag);
  const lab = await createLab(t, `${tag}zzz`);
  const { client, gateway, server } = await threeNamespaces(lab);
  await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
  const w = watch(server);
  t.teardown(() => {
    w.proc.kill('SIGTERM');
  });
  await w.ready;
  const engine = await startSluice(t, gateway, dir, CONFIG, path.join(dir, 'state.json'));
  const attached = await engine.waitFor((l) => l.msg === 'classifier attached' || /unavailable|could not be attached/.test(String(l.msg)), 10_000, 'the classifier line');
  t.match(attached, { msg: 'classifier attached', sniDenied: 1 }, 'the classifier is attached with the SNI filter');
  return { client, gateway, server, engine, events: w.events };
}

t.test('classifier.sni: a denied flow ends at the server too (RST forwarded by the kernel), not half-open', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'curl', 'ss'])) return;
  const { client, server, engine, events } = await setUp(t, 'snien');
  for (const [scheme, port, ip] of [
    ['https', 443, SERVER_V4],
    ['http', 80, SERVER_V4],
    ['https', 443, SERVER_V6],
  ] as const) {
    const s0 = await sniCounters(engine);
    const from = events.length;
    const host = ip.includes(':') ? `[${ip}]` : ip;
    const r = await client.exec(['curl', '-sS', '-k', '--max-time', '6', '--resolve', `www.blocked.example:${port}:${host}`, `${scheme}://www.blocked.example/`], { allowFail: true, timeoutMs: 15_000 });
    t.match(r.stderr, /reset/i, `${scheme} via ${ip}: the client is reset (${r.stderr.trim()})`);
    const mine = (): WatchEvent[] => events.slice(from).filter((e) => e.port === port);
    await until(`the server's connection on ${port} to end`, () => mine().some((e) => e.event === 'close'));
    const accepted = mine().find((e) => e.event === 'accept');
    t.ok(accepted, `${scheme} via ${ip}: the server had accepted the connection`);
    const end = mine().find((e) => e.event === 'error' || e.event === 'close');
    t.match(end, { event: 'error', code: 'ECONNRESET', bytes: 0 }, `${scheme} via ${ip}: the server's side is reset, having received nothing`);
    const s1 = await sniCounters(engine);
    t.equal(s1.serverResets, s0.serverResets + 1, `serverResets rose by one (${s0.serverResets} -> ${s1.serverResets})`);
    t.ok(s1.resets >= s0.resets + 1, `resets rose (${s0.resets} -> ${s1.resets})`);
  }
  const open = await server.sh('ss -Htn state established "( sport = :80 or sport = :443 )"');
  t.equal(open.trim(), '', 'no connection is left established on the server');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
});

t.test('classifier.sni: names behind IPv4 options and IPv6 extension headers are seen', { timeout: 150_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', '/usr/bin/python3'])) return;
  const { client, engine } = await setUp(t, 'snihd');
  for (const [kind, port, ip, headers] of [
    ['tls', 443, SERVER_V4, 'v4opts'],
    ['http', 80, SERVER_V4, 'v4opts'],
    ['tls', 443, SERVER_V6, 'v6ext'],
    ['http', 80, SERVER_V6, 'v6ext'],
  ] as const) {
    const what = `${kind} via ${ip} with ${headers}`;
    const s0 = await sniCounters(engine);
    const denied = await craftedPacket(client, [kind, ip, String(port), headers, 'deep.blocked.example']);
    t.match(denied, { reply: 'tcp', flags: 'RA', ttl: 64 }, `${what}, denied name: the filter's RST|ACK, straight from the gateway (${JSON.stringify(denied)})`);
    t.equal(denied.ack, (denied.sentSeq + denied.sentLen) >>> 0, `${what}: ACK = SEQ + length`);
    const s1 = await sniCounters(engine);
    const blocked = kind === 'tls' ? 'tlsBlocked' : 'httpBlocked';
    const allowed = kind === 'tls' ? 'tlsAllowed' : 'httpAllowed';
    t.equal(s1[blocked], s0[blocked] + 1, `${what}: ${blocked} rose by one`);
    await craftedPacket(client, [kind, ip, String(port), headers, 'allowed.example']);
    const s2 = await sniCounters(engine);
    t.equal(s2[allowed], s1[allowed] + 1, `${what}, allowed name: seen and counted as ${allowed}`);
    t.equal(s2[blocked], s1[blocked], `${what}: not blocked`);
  }
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
});
