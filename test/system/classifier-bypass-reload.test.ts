/**
 * classifier.bypass follows a reload (SIGHUP), in the client / gateway /
 * server topology with the classifier on the gateway's LAN:
 *   - without eBPF (no object), gateway mode tproxy: the nftables table's
 *     `accept` lines ahead of the TPROXY rules are replaced in one
 *     transaction; gateway mode tun: the `to PREFIX lookup main` rules are
 *     added and deleted (and the state file follows);
 *   - with eBPF, gateway mode tun: the classifier's maps;
 * each time the IPv4 server moves from the kernel path (the server sees
 * the client) to sluice (it sees the gateway, a flow line) and the IPv6
 * server the other way; after the stop everything is byte-equal to before.
 *
 * Needs root, /dev/net/tun, ip, tc, nft, curl.
 */
import t from 'tap';
import path from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { curl, describe, requireCommands, tempDir, type Engine } from '../fixtures/engine/lab.js';
import { fullSnapshot, startSluice } from './workstation.js';
import { gatewayConfig, gatewayLab, NO_RP_FILTER } from './gateway-lab.js';

function config(mode: 'tun' | 'tproxy', bypass: string): string {
  return gatewayConfig(mode, `classifier: { enabled: true, default: tun, bypass: [${bypass}] }\n`);
}

async function peer(client: Netns, host: string): Promise<string> {
  const r = await curl(client, ['-g', `http://${host.includes(':') ? `[${host}]` : host}/`]);
  if (r.code !== 0) throw new Error(`curl ${host}: ${describe(r)}`);
  return ((JSON.parse(r.stdout) as { peer?: string }).peer ?? '').replace(/^::ffff:/, '');
}

function flowsTo(engine: Engine, host: string): number {
  const dst = host.includes(':') ? `[${host}]:80` : `${host}:80`;
  return engine.lines.filter((l) => l.msg === 'flow' && l.dst === dst).length;
}

async function check(t: Test, client: Netns, engine: Engine, kernel: string, kernelSelf: string, proxied: string, when: string): Promise<void> {
  const k = flowsTo(engine, kernel);
  t.equal(await peer(client, kernel), kernelSelf, `${when}: ${kernel} (bypass) forwarded by the kernel: the server saw the client`);
  await new Promise((r) => setTimeout(r, 500)); // a flow line would follow the close at once
  t.equal(flowsTo(engine, kernel), k, `${when}: no new flow line to ${kernel}`);
  const n = flowsTo(engine, proxied);
  t.not(await peer(client, proxied), proxied.includes(':') ? CLIENT_V6 : CLIENT_V4, `${when}: ${proxied} through sluice: the server did not see the client`);
  await engine.waitFor(() => flowsTo(engine, proxied) > n, 5000, `a flow line to ${proxied}`);
}

async function run(t: Test, tag: string, mode: 'tun' | 'tproxy', ebpf: boolean): Promise<void> {
  const dir = tempDir(t, tag);
  const state = path.join(dir, 'state.json');
  const { client, gateway } = await gatewayLab(t, tag, { sysctl: NO_RP_FILTER, web: true });
  const before = await fullSnapshot(gateway);
  const cfg = path.join(dir, 'sluice.yaml');
  const engine = await startSluice(t, gateway, dir, config(mode, '203.0.113.0/24'), state, ebpf ? {} : { SLUICE_BPF_OBJECT: path.join(dir, 'missing.o') });
  t.match(engine.lines.find((l) => l.msg === 'gateway installed'), { classifier: ebpf ? 'ebpf' : 'fallback' }, `the classifier runs ${ebpf ? 'as eBPF' : 'as its fallback'}`);
  await check(t, client, engine, SERVER_V4, CLIENT_V4, SERVER_V6, 'at start');

  writeFileSync(cfg, config(mode, '"2001:db8:5::/64"'));
  const n = engine.lines.length;
  engine.proc.kill('SIGHUP');
  const reloaded = await engine.waitFor((l) => l.msg === 'reloaded' && engine.lines.indexOf(l) >= n, 15_000, '"reloaded"');
  t.match(reloaded, { changes: ['classifier.bypass: 1 added, 1 removed (1 in all)'] }, 'the reload names the bypass change');
  t.notOk(engine.lines.slice(n).some((l) => /cannot change these settings/.test(String(l.msg))), 'and does not call it a restart-only setting');
  const applied = ebpf ? 'classifier updated' : mode === 'tproxy' ? 'gateway nftables updated' : 'classifier fallback updated';
  await engine.waitFor((l) => l.msg === applied && engine.lines.indexOf(l) >= n, 10_000, `"${applied}"`);
  if (!ebpf && mode === 'tproxy') {
    const nft = await gateway.sh('nft list table inet sluice_gw');
    t.match(nft, /ip6 daddr 2001:db8:5::\/64 accept/, 'nftables: the new bypass prefix is accepted ahead of TPROXY');
    t.notMatch(nft, /203\.0\.113\.0\/24/, 'nftables: the old one is gone');
  }
  if (!ebpf && mode === 'tun') {
    const rules = await gateway.sh('ip rule; ip -6 rule');
    t.match(rules, /to 2001:db8:5::\/64 lookup main/, 'ip rule: the new bypass prefix goes to main');
    t.notMatch(rules, /203\.0\.113\.0\/24/, 'ip rule: the old one is gone');
    const recorded = JSON.parse(readFileSync(state, 'utf8')) as { rules: { selector: string[] }[] };
    t.ok(recorded.rules.some((r) => r.selector.includes('2001:db8:5::/64')) && !recorded.rules.some((r) => r.selector.includes('203.0.113.0/24')), 'the state file lists the new rule, not the old');
  }
  await check(t, client, engine, SERVER_V6, CLIENT_V6, SERVER_V4, 'after SIGHUP');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  t.equal(await fullSnapshot(gateway), before, 'byte-equal to before');
}

t.test('classifier.bypass on SIGHUP, no eBPF, gateway mode tproxy: the nftables table is replaced', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl'])) return;
  await run(t, 'bypreltp', 'tproxy', false);
});

t.test('classifier.bypass on SIGHUP, no eBPF, gateway mode tun: the policy-routing rules follow', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl'])) return;
  await run(t, 'byprelfb', 'tun', false);
});

t.test('classifier.bypass on SIGHUP, eBPF, gateway mode tun: the maps follow', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'nft', 'curl'])) return;
  await run(t, 'byprelbp', 'tun', true);
});
