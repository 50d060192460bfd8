/**
 * The fallbacks when the kernel refuses the TC program the way an old
 * kernel does: test/fixtures/old-kernel-classifier.c is bpf/classifier.c
 * with its bpf_sk_assign calls naming a helper number this kernel does not
 * have, so the verifier refuses the load ("invalid func unknown#1999",
 * EINVAL), as a kernel before 5.7 refuses bpf_sk_assign (helper 124).
 * Loaded through SLUICE_BPF_OBJECT, in the client / gateway / server
 * topology:
 *   - gateway.mode tproxy-ebpf: one warning naming the verifier's reason
 *     and saying nftables TPROXY takes over; TCP over both families and UDP
 *     are proxied (flow lines with inbound tproxy and the original
 *     destination); nothing is attached at lan0;
 *   - classifier + gateway mode tun: one warning, then policy routing alone:
 *     classifier.bypass is forwarded by the kernel (the server sees the
 *     client, no flow line, the TUN still), the rest goes through the TUN
 *     (a flow line);
 *   - both: byte-equal to before after the stop.
 *
 * Needs root, /dev/net/tun, ip, tc, nft, curl, clang (as `npm run build:bpf`).
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { arch } from 'node:os';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { CLIENT_V4, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { curl, describe, requireCommands, tempDir, TUN, type Engine, type LogLine } from '../fixtures/engine/lab.js';
import { fullSnapshot, linkPackets, startSluice } from './workstation.js';
import { gatewayConfig, gatewayLab, NO_RP_FILTER, startNodeScript } from './gateway-lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE = path.resolve(here, '../../../test/fixtures/old-kernel-classifier.c');

const UDP_ECHO = `const d = require('dgram'); const s = d.createSocket('udp4'); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(7000, () => console.log('ready'));`;
const UDP_PING = `const d = require('dgram'); const s = d.createSocket('udp4'); s.on('message', (m) => { console.log(String(m)); process.exit(0); }); s.send('ping over udp', 7000, process.argv[1]); setTimeout(() => process.exit(3), 4000);`;

/** Compiles the fixture into `dir` with the flags of `npm run build:bpf`. */
function oldKernelObject(dir: string): string {
  const out = path.join(dir, 'old-kernel-classifier.o');
  const machine = arch() === 'x64' ? 'x86_64' : arch() === 'arm64' ? 'aarch64' : arch();
  execFileSync('clang', ['-O2', '-g', '-Wall', '-target', 'bpf', `-I/usr/include/${machine}-linux-gnu`, '-c', FIXTURE, '-o', out], { stdio: ['ignore', 'ignore', 'pipe'] });
  return out;
}

async function lab(t: Test, tag: string): Promise<{ client: Netns; gateway: Netns; server: Netns }> {
  return gatewayLab(t, tag, { sysctl: NO_RP_FILTER, web: true });
}

function oneWarning(t: Test, engine: Engine, says: RegExp): void {
  const warnings = engine.lines.filter((l: LogLine) => /unavailable|could not be attached/.test(String(l.msg)));
  t.equal(warnings.length, 1, `one warning: ${String(warnings[0]?.msg)}`);
  t.match(String(warnings[0]?.msg), says, 'saying what takes over');
  t.match(String(warnings[0]?.reason), /EINVAL.*the verifier said: invalid func unknown#1999/, `naming the verifier's reason (${String(warnings[0]?.reason)})`);
}

t.test('tproxy-ebpf on a kernel that refuses bpf_sk_assign: one warning with the verifier\'s reason, nftables TPROXY does the job', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl', 'clang'])) return;
  const dir = tempDir(t, 'oldkrn');
  const object = oldKernelObject(dir);
  const { client, gateway, server } = await lab(t, 'oldkrnta');
  await startNodeScript(t, server, UDP_ECHO);
  const before = await fullSnapshot(gateway);
  const yaml = gatewayConfig('tproxy-ebpf');
  const engine = await startSluice(t, gateway, dir, yaml, path.join(dir, 'state.json'), { SLUICE_BPF_OBJECT: object });
  oneWarning(t, engine, /eBPF socket assignment unavailable; falling back to nftables TPROXY/);
  t.match(engine.lines.find((l) => l.msg === 'gateway installed'), { mode: 'tproxy-ebpf', classifier: 'fallback' }, 'the gateway runs as tproxy');
  t.equal(await gateway.sh('tc filter show dev lan0 ingress'), '', 'nothing attached at lan0');
  t.match(await gateway.sh('nft list table inet sluice_gw'), /tproxy to :7893/, 'the nftables TPROXY rules are installed');
  for (const [target, dst] of [
    [SERVER_V4, `${SERVER_V4}:80`],
    [`[${SERVER_V6}]`, `[${SERVER_V6}]:80`],
  ] as const) {
    const r = await curl(client, ['-g', `http://${target}/`]);
    t.equal(r.code, 0, `curl ${target} through the gateway (${describe(r)})`);
    t.match(await engine.waitFor((l) => l.msg === 'flow' && l.dst === dst, 5000, `a flow line to ${dst}`), { inbound: 'tproxy' }, `a flow line with inbound tproxy and the original destination ${dst}`);
  }
  const ping = await client.exec([process.execPath, '-e', UDP_PING, SERVER_V4], { allowFail: true, env: { ...process.env, NODE_OPTIONS: '' } });
  t.equal(ping.stdout.trim(), 'ping over udp', 'UDP is proxied too');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.ok(engine.flows().some((f) => f.network === 'udp' && f.inbound === 'tproxy' && f.dst === `${SERVER_V4}:7000`), 'a UDP flow line with inbound tproxy');
  t.equal(await fullSnapshot(gateway), before, 'byte-equal to before');
});

t.test('classifier + gateway mode tun on a kernel that refuses the program: one warning, policy routing alone (bypass by the kernel, the rest through the TUN)', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'curl', 'clang'])) return;
  const dir = tempDir(t, 'oldkrc');
  const object = oldKernelObject(dir);
  const { client, gateway } = await lab(t, 'oldkrncl');
  const before = await fullSnapshot(gateway);
  const yaml = gatewayConfig('tun', 'classifier: { enabled: true, bypass: [203.0.113.0/24] }\n');
  const engine = await startSluice(t, gateway, dir, yaml, path.join(dir, 'state.json'), { SLUICE_BPF_OBJECT: object });
  oneWarning(t, engine, /eBPF classifier unavailable; falling back to policy routing alone/);
  t.equal(await gateway.sh('tc filter show dev lan0 ingress'), '', 'nothing attached at lan0');
  t.match(await gateway.sh('ip rule'), /to 203\.0\.113\.0\/24 lookup main[\s\S]*iif lan0 lookup 2022/, 'bypass to main, then the LAN into the TUN');
  const tun0 = await linkPackets(gateway, TUN);
  const direct = await curl(client, [`http://${SERVER_V4}/`]);
  t.equal(direct.code, 0, `bypass ${SERVER_V4}: reachable (${describe(direct)})`);
  t.equal((JSON.parse(direct.stdout || '{}') as { peer?: string }).peer?.replace(/^::ffff:/, ''), CLIENT_V4, 'forwarded by the kernel: the server saw the client');
  t.equal((await linkPackets(gateway, TUN)).rx, tun0.rx, 'the TUN saw none of it');
  const proxied = await curl(client, ['-g', `http://[${SERVER_V6}]/`]);
  t.equal(proxied.code, 0, `[${SERVER_V6}]: reachable (${describe(proxied)})`);
  t.match(await engine.waitFor((l) => l.msg === 'flow' && l.dst === `[${SERVER_V6}]:80`, 5000, 'a flow line'), { inbound: 'tun' }, 'through the TUN: a flow line');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.notOk(engine.flows().some((f) => f.dst === `${SERVER_V4}:80`), 'no flow line for the bypass prefix');
  t.equal(await fullSnapshot(gateway), before, 'byte-equal to before');
});
