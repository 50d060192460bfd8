/**
 * A fuzz run of the whole packet path (issue 12, Must show): `sluice run`
 * in gateway mode (tun, then tproxy) in the client / gateway / server lab,
 * while two generators in the client namespace throw packets at it for a
 * bounded time:
 *   - test/fixtures/hostile.py: random and mutated IPv4/IPv6 TCP, UDP and
 *     ICMP (valid IP headers, random flags, options, extension headers,
 *     lengths, checksums, ports including 0), fast;
 *   - test/fixtures/fuzz-scapy.py: scapy fuzz() packets (every unpinned
 *     field random), some to multicast, broadcast and unspecified addresses.
 * Meanwhile a TCP flow through sluice echoes a line every 100 ms. Then:
 * sluice is alive, the held flow echoed every line, a new curl and a new
 * UDP round trip work, the counters show the drops, no packet made the
 * stack throw and no uncaught error happened.
 *
 * SLUICE_FUZZ_SECONDS (default 15) sets the time per mode: e.g.
 * `SLUICE_FUZZ_SECONDS=300 npx tap --timeout 1800 dist/test/system/fuzz-run.test.js`
 * for a long run (see bench/README.md). Packet counts and figures go to the
 * TAP comments.
 *
 * Needs root, /dev/net/tun, curl, ip, nft, /usr/bin/python3 with scapy.
 */
import t from 'tap';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { requireRoot } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { childEnv, createLab, curl, describe, requireCommands, startWebServer, tempDir, TUN, type Engine, type LogLine } from '../fixtures/engine/lab.js';
import { startSluice } from './workstation.js';
import { ECHO, holdProgram } from './echo-programs.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const HOSTILE = path.resolve(here, '../../../test/fixtures/hostile.py');
const SCAPY = path.resolve(here, '../../../test/fixtures/fuzz-scapy.py');
const PY = '/usr/bin/python3';
const SECONDS = Number(process.env.SLUICE_FUZZ_SECONDS ?? '15');

function config(gateway: string): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
  hijack: true
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], ${gateway} }
`;
}

const node = [process.execPath];
const env = { env: childEnv };
const HOLD = holdProgram(3000);
const PING = `const d = require('dgram'); const s = d.createSocket(process.argv[1].includes(':') ? 'udp6' : 'udp4'); s.on('message', (m) => { console.log(String(m)); process.exit(0); }); s.send('ping', 7000, process.argv[1]); setTimeout(() => process.exit(3), 3000);`;

async function counters(engine: Engine): Promise<LogLine> {
  const seen = engine.lines.length;
  engine.proc.kill('SIGUSR2');
  return engine.waitFor((l) => l.msg === 'counters' && engine.lines.indexOf(l) >= seen, 30_000, 'a counters line');
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

function sum(r: Record<string, number>): number {
  return Object.values(r).reduce((a, b) => a + b, 0);
}

async function fuzzRun(t: Test, tag: string, mode: 'tun' | 'tproxy'): Promise<void> {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft', PY])) return;
  const dir = tempDir(t, tag);
  const lab = await createLab(t, tag);
  const { client, gateway, server } = await threeNamespaces(lab);
  await startWebServer(t, server);
  const echo = server.spawn([...node, '-e', ECHO], env);
  t.teardown(() => void echo.kill());
  await new Promise<void>((resolve) => echo.stdout!.once('data', () => resolve()));
  const engine = await startSluice(t, gateway, dir, config(`mode: ${mode}`), path.join(dir, 'state.json'));
  await engine.waitFor((l) => l.msg === 'gateway installed', 5000, '"gateway installed"');
  const pid = engine.proc.pid!;
  const before = await counters(engine);
  const rss0 = rssKb(pid);
  const mac = (await gateway.sh('cat /sys/class/net/lan0/address')).trim();

  const hold = client.spawn([...node, '-e', HOLD, SERVER_V4, String(SECONDS * 1000 + 2000)], env);
  let holdOut = '';
  hold.stdout!.on('data', (d: Buffer) => (holdOut += d.toString()));
  await new Promise<void>((resolve) => hold.stdout!.once('data', () => resolve()));
  const holdDone = new Promise<void>((resolve) => hold.once('exit', () => resolve()));

  const started = Date.now();
  const budget = (SECONDS + 120) * 1000;
  const [h, s] = await Promise.all([
    client.exec([PY, HOSTILE, 'eth0', mac, '1000000000', String(SECONDS), String(SECONDS)], { timeoutMs: budget }),
    client.exec([PY, SCAPY, 'eth0', mac, String(SECONDS), '12'], { timeoutMs: budget }),
  ]);
  const elapsed = (Date.now() - started) / 1000;
  const hostile = JSON.parse(h.stdout.trim().split('\n').pop()!) as { v4: number; v6: number };
  const scapy = JSON.parse(s.stdout.trim().split('\n').pop()!) as { packets: number; unsendable: number };
  const total = hostile.v4 + hostile.v6 + scapy.packets;
  t.comment(`mode ${mode}: ${total} packets in ${elapsed.toFixed(1)} s (hostile.py ${hostile.v4} IPv4 + ${hostile.v6} IPv6, scapy fuzz() ${scapy.packets}, ${scapy.unsendable} unsendable)`);
  t.ok(total > SECONDS * 500, `the generators sent packets (${total})`);
  t.ok(engine.running, 'sluice is alive after the fuzz run');

  await holdDone;
  const held = JSON.parse(holdOut.trim().split('\n').pop()!) as { sent: number; echoed: number; err: string | null };
  t.ok(held.err === null && held.sent > SECONDS * 5 && held.echoed === held.sent, `the TCP flow held across the run echoed every line (${JSON.stringify(held)})`);

  for (const target of [SERVER_V4, `[${SERVER_V6}]`]) {
    const r = await curl(client, ['-g', `http://${target}/`], 20);
    t.equal(r.code, 0, `a legitimate curl to ${target} works afterwards (${describe(r)})`);
  }
  const ping = await client.exec([...node, '-e', PING, SERVER_V4], { ...env, allowFail: true });
  t.equal(ping.stdout.trim(), 'ping', 'a new UDP round trip works afterwards');

  const after = await counters(engine);
  const stack0 = before.stack as Record<string, number>;
  const stack1 = after.stack as Record<string, number>;
  const px = after.tproxyUdp as Record<string, number>;
  const drops = sum(stack1) - sum(stack0);
  t.comment(`stack drops: ${JSON.stringify(Object.fromEntries(Object.entries(stack1).filter(([, v]) => v > 0)))}`);
  t.comment(`engine: tcpFlows ${String(after.tcpFlows)} udpSessions ${String(after.udpSessions)} badTarget ${String(after.badTarget)} upstreamFailures ${String(after.upstreamFailures)} tproxyUdp ${JSON.stringify(px)}`);
  t.comment(`RSS ${rss0} kB before, ${rssKb(pid)} kB after`);
  if (mode === 'tun') t.ok(drops > total / 20, `the counters show the drops (${drops} stack drops)`);
  else t.ok(drops + sum(px) > 0 || (after.udpSessions as number) > 10, `the counters show what the kernel let through (stack ${drops}, tproxyUdp ${sum(px)}, udpSessions ${String(after.udpSessions)})`);
  t.equal(stack1.internal_error ?? 0, 0, 'no packet made the stack throw');
  t.equal(after.flowErrors, 0, 'no flow handler failed');
  t.equal(after.unattributedErrors, 0, 'no uncaught error');
  const stopped = await engine.stop();
  t.comment(`exit after SIGTERM: ${JSON.stringify(stopped)} (bounded stop: issue 12 item 5, another branch)`);
}

t.test('fuzz run, gateway mode tun', { timeout: (SECONDS + 180) * 1000 }, (t) => fuzzRun(t, 'fuzztunr', 'tun'));
t.test('fuzz run, gateway mode tproxy', { timeout: (SECONDS + 180) * 1000 }, (t) => fuzzRun(t, 'fuzzprox', 'tproxy'));
