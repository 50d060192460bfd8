/**
 * `sluice run` driving the eBPF classifier in a gateway namespace
 * (client -- gateway -- server): with the classifier on lan0 ingress and a
 * policy whose cidr rule set sends 203.0.113.128/25 direct while a domain
 * rule forces the default to 'tun', flows to the bypass prefix take the
 * kernel path (no flow line, the TUN sees nothing, the kernel counter
 * rises) and flows elsewhere reach the engine (flow line); editing the rule
 * set and SIGHUP moves 203.0.113.128/25 to the TUN side live; the tc state
 * and ip rules are as before after a clean stop and after kill -9 followed
 * by `sluice down`.
 *
 * Without eBPF (SLUICE_BPF_OBJECT naming a missing file): one warning, and
 * policy routing alone does the steering.
 *
 * Needs root, /dev/net/tun, ip, tc, curl, a kernel that loads eBPF.
 */
import t from 'tap';
import path from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import { requireRoot, waitForJsonLine } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { BLOB_SERVER, childEnv, createLab, Engine as EngineProc, requireCommands, SLUICE_BIN, tempDir, TUN, type Engine, type FlowLine, type LogLine } from '../fixtures/engine/lab.js';
import { linkPackets, sluiceDown, startSluice } from './workstation.js';
import type { Netns } from '../harness/netns.js';

const BYPASS_V4 = '203.0.113.130';

type Counters = Record<'kernel' | 'tun' | 'tproxy' | 'drop', { packets: number; bytes: number }>;

function config(ruleSetFile: string): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false }
ruleSets:
  fast: { type: cidr, path: ${ruleSetFile} }
rules:
  - { ruleSet: [fast], outbound: direct }
  - { domainSuffix: [never.example], outbound: direct }
final: direct
classifier:
  enabled: true
  interfaces: [lan0]
`;
}

async function snapshot(gw: Netns): Promise<string> {
  return gw.sh('echo "## tc filter"; tc filter show dev lan0 ingress; echo "## tc qdisc"; tc qdisc show dev lan0; echo "## ip rule"; ip rule; echo "## ip -6 rule"; ip -6 rule');
}

async function counters(engine: Engine): Promise<Counters> {
  const n = engine.lines.length;
  engine.proc.kill('SIGUSR2');
  const line = await engine.waitFor<LogLine & { classifier?: Counters }>((l) => l.msg === 'counters' && engine.lines.indexOf(l) >= n, 5000, 'a counters line');
  if (line.classifier === undefined) throw new Error(`no classifier counters in ${JSON.stringify(line)}`);
  return line.classifier;
}

const flowsTo = (engine: Engine, ip: string): FlowLine[] => engine.flows().filter((f) => String(f.dst).startsWith(`${ip}:`) || String(f.dst) === ip);

t.test('sluice run fills the classifier from the policy, updates it on SIGHUP, and leaves no trace', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'curl'])) return;
  const dir = tempDir(t, 'clsrun');
  const state = path.join(dir, 'run', 'state.json');
  const ruleSet = path.join(dir, 'fast.txt');
  writeFileSync(ruleSet, '203.0.113.128/25\n');
  const lab = await createLab(t, 'clsrunxx');
  const { client, gateway, server } = await threeNamespaces(lab);
  await server.exec(['ip', 'addr', 'add', `${BYPASS_V4}/24`, 'dev', 'eth0']);
  const srv = server.spawn([process.execPath, BLOB_SERVER, '8080']);
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
  const before = await snapshot(gateway);

  const fetch = async (host: string): Promise<{ code: number; body: string }> => {
    const r = await client.exec(['curl', '-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', `http://${host}:8080/bytes/100000`], { allowFail: true, timeoutMs: 20_000 });
    return { code: r.code, body: r.stdout.trim() };
  };

  // 1. Running: bypass prefix on the kernel path, the rest through the engine.
  let engine = await startSluice(t, gateway, dir, config(ruleSet), state);
  const attached = await engine.waitFor((l) => l.msg === 'classifier attached' || /classifier unavailable|could not be attached/.test(String(l.msg)), 10_000, 'the classifier line');
  if (attached.msg !== 'classifier attached') {
    t.fail(`the classifier did not attach: ${JSON.stringify(attached)}`);
    await engine.stop();
    return;
  }
  t.match(attached, { default: 'tun', prefixes: 1, inexpressibleRules: 1 }, 'default tun (a domain rule), one kernel prefix');
  await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
  t.match(await gateway.sh('tc filter show dev lan0 ingress'), /bpf/, 'a bpf filter sits at lan0 ingress');
  t.match(await gateway.sh('ip rule'), /fwmark 0x164 lookup 2022/, 'marked packets are routed by the TUN table');

  const c0 = await counters(engine);
  const tun0 = await linkPackets(gateway, TUN);
  t.same(await fetch(BYPASS_V4), { code: 0, body: '200' }, 'bypass prefix: download completes');
  const c1 = await counters(engine);
  const tun1 = await linkPackets(gateway, TUN);
  t.equal(flowsTo(engine, BYPASS_V4).length, 0, 'no flow line for the bypass prefix');
  // A few packets of the kernel's own IPv6 housekeeping (router solicitation,
  // MLD) may cross a fresh TUN; a 100 KB download would be dozens.
  t.ok(tun1.tx - tun0.tx <= 3, `the TUN saw none of its packets (tx ${tun0.tx} -> ${tun1.tx})`);
  t.ok(c1.kernel.packets > c0.kernel.packets + 5, `the kernel counter rose by ${c1.kernel.packets - c0.kernel.packets}`);

  t.same(await fetch(SERVER_V4), { code: 0, body: '200' }, 'proxied side: download completes');
  const f = await engine.waitFor((l) => l.msg === 'flow' && String(l.dst).startsWith(SERVER_V4), 10_000, `a flow line to ${SERVER_V4}`);
  t.ok(f, 'the flow reached the engine');
  const c2 = await counters(engine);
  t.ok(c2.tun.packets > c1.tun.packets, `the tun counter rose by ${c2.tun.packets - c1.tun.packets}`);

  // 2. SIGHUP after editing the rule set: 203.0.113.128/25 joins the TUN side, live.
  writeFileSync(ruleSet, '198.51.100.0/24\n');
  engine.proc.kill('SIGHUP');
  const upd = await engine.waitFor((l) => l.msg === 'classifier updated', 10_000, '"classifier updated"');
  t.match(upd, { set: 1, removed: 1 }, 'one prefix set, one removed');
  t.match(await gateway.sh('tc filter show dev lan0 ingress'), /bpf/, 'still attached');
  t.same(await fetch(BYPASS_V4), { code: 0, body: '200' }, 'after the reload: download completes');
  await engine.waitFor((l) => l.msg === 'flow' && String(l.dst).startsWith(BYPASS_V4), 10_000, `a flow line to ${BYPASS_V4}`);
  t.pass('and now it has a flow line');

  // 3. Clean stop.
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  const stopping = engine.lines.find((l) => l.msg === 'stopping') as (LogLine & { classifier?: Counters }) | undefined;
  t.ok(stopping?.classifier?.kernel !== undefined, 'the stopping line carries the classifier counters');
  t.equal(await snapshot(gateway), before, 'after SIGTERM: tc state and ip rules as before');
  t.notOk(existsSync(state), 'no state file left');

  // 4. kill -9, then sluice down.
  writeFileSync(ruleSet, '203.0.113.128/25\n');
  engine = await startSluice(t, gateway, dir, config(ruleSet), state);
  await engine.waitFor((l) => l.msg === 'classifier attached', 10_000, '"classifier attached"');
  engine.proc.kill('SIGKILL');
  await engine.exited;
  t.not(await snapshot(gateway), before, 'after kill -9: the filter and rules remain');
  const down = await sluiceDown(gateway, state);
  t.equal(down.code, 0, `sluice down exits 0 (${down.stdout.trim()} ${down.stderr.trim()})`);
  t.equal(await snapshot(gateway), before, 'after kill -9 + sluice down: tc state and ip rules as before');
  t.same(await fetch(BYPASS_V4), { code: 0, body: '200' }, 'and the gateway forwards by the kernel again');
});

t.test('without eBPF: one warning, then policy routing alone (bypass via the main table, the rest via the TUN)', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'curl'])) return;
  const dir = tempDir(t, 'clsfall');
  const state = path.join(dir, 'state.json');
  const lab = await createLab(t, 'clsfallx');
  const { client, gateway, server } = await threeNamespaces(lab);
  await server.exec(['ip', 'addr', 'add', `${BYPASS_V4}/24`, 'dev', 'eth0']);
  const srv = server.spawn([process.execPath, BLOB_SERVER, '8080']);
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
  const before = await snapshot(gateway);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(
    cfg,
    `log: { level: info, format: json }\ntun: { name: ${TUN} }\ndns: { mode: real-ip, hijack: false }\nclassifier: { enabled: true, interfaces: [lan0], bypass: [203.0.113.128/25] }\n`,
  );
  const proc = gateway.spawn([process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', state], { env: { ...childEnv, SLUICE_BPF_OBJECT: path.join(dir, 'missing.o') } });
  const engine = new EngineProc(proc);
  t.teardown(() => {
    if (!t.passing()) t.comment(engine.transcript());
  });
  await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
  await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
  const warnings = engine.lines.filter((l) => /classifier unavailable/.test(String(l.msg)));
  t.equal(warnings.length, 1, 'one warning');
  t.match(String(warnings[0]?.reason), /missing\.o.*missing/, `naming the reason: ${String(warnings[0]?.reason)}`);
  t.equal(await gateway.sh('tc filter show dev lan0 ingress'), '', 'nothing attached');
  t.match(await gateway.sh('ip rule'), /iif lan0 lookup 2022/, 'lan0 is routed into the TUN');

  const fetch = (host: string) => client.exec(['curl', '-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', `http://${host}:8080/bytes/50000`], { allowFail: true, timeoutMs: 20_000 });
  const tun0 = await linkPackets(gateway, TUN);
  t.equal((await fetch(BYPASS_V4)).stdout, '200', 'bypass prefix: download completes');
  const tun1 = await linkPackets(gateway, TUN);
  t.ok(tun1.tx - tun0.tx <= 3, `the TUN saw none of it (tx ${tun0.tx} -> ${tun1.tx}; a few kernel IPv6 housekeeping packets allowed)`);
  t.equal(flowsTo(engine, BYPASS_V4).length, 0, 'no flow line');
  t.equal((await fetch(SERVER_V4)).stdout, '200', 'elsewhere: download completes');
  await engine.waitFor((l) => l.msg === 'flow' && String(l.dst).startsWith(SERVER_V4), 10_000, `a flow line to ${SERVER_V4}`);
  t.pass('through the engine');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await snapshot(gateway), before, 'tc state and ip rules as before');
});
