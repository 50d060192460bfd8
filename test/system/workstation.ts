/**
 * The workstation topology for the auto-route tests: a "workstation"
 * namespace where sluice runs with route.auto (so it changes that
 * namespace's own routing), joined by one veth to a "server" namespace
 * running the web fixture. The server answers on two prefixes per family:
 * one the workstation routes into the TUN, one the config excludes.
 *
 *   workstation eth0 ──veth── eth0 server
 *   203.0.113.1/24              203.0.113.2     (routed into the TUN)
 *   198.51.100.1/24             198.51.100.2    (route.exclude)
 *   2001:db8:5::1/64            2001:db8:5::2   (routed into the TUN)
 *   2001:db8:e::1/64            2001:db8:e::2   (route.exclude)
 *
 * Everything (routes, rules, nftables) happens inside namespaces the lab
 * owns; the host's own state is never touched.
 */
import type { Test } from 'tap';
import type { Netns } from '../harness/netns.js';
import { childEnv, createLab, Engine, SLUICE_BIN, startWebServer, TUN } from '../fixtures/engine/lab.js';
import { captureEnv } from '../harness/capture.js';
import path from 'node:path';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';

export const SERVER_V4 = '203.0.113.2';
export const SERVER_V6 = '2001:db8:5::2';
export const EXCLUDED_V4 = '198.51.100.2';
export const EXCLUDED_V6 = '2001:db8:e::2';
export const TABLE = 2022;
export const PRIORITY = 9000;

export function config(extra = ''): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
route:
  auto: true
  table: ${TABLE}
  priority: ${PRIORITY}
  exclude: [198.51.100.0/24, "2001:db8:e::/64"]
${extra}`;
}

export async function workstation(t: Test, tag: string, web = true): Promise<{ ws: Netns; server: Netns }> {
  const lab = await createLab(t, tag);
  const ws = await lab.netns('workstation');
  const server = await lab.netns('server');
  await lab.veth(ws, 'eth0', server, 'eth0', {
    a: ['203.0.113.1/24', '198.51.100.1/24', '2001:db8:5::1/64', '2001:db8:e::1/64'],
    b: [`${SERVER_V4}/24`, `${EXCLUDED_V4}/24`, `${SERVER_V6}/64`, `${EXCLUDED_V6}/64`],
  });
  if (web) await startWebServer(t, server);
  return { ws, server };
}

/**
 * Waits until IPv6 on the gateway's links has settled (link-local addresses
 * present, duplicate address detection over), so that the kernel's own
 * fe80::/64 and local routes do not appear between two snapshots.
 */
export async function settle(ns: Netns, links: readonly string[] = ['lan0', 'wan0']): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const tentative = await ns.sh('ip -6 addr show tentative');
    const linkLocal = await ns.sh('ip -6 -o addr show scope link');
    const local = await ns.sh('ip -6 route show table local');
    if (tentative.trim() === '' && links.every((d) => linkLocal.includes(` ${d} `) && new RegExp(`local fe80::\\S+ dev ${d} `).test(local))) return;
    if (Date.now() > deadline) throw new Error(`IPv6 did not settle:\n${tentative}\n${linkLocal}\n${local}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * snapshot() plus every forwarding sysctl (global and per interface, both
 * families) and the tc qdiscs and filters of `links`: all that sluice's
 * gateway and classifier modes change.
 */
export async function fullSnapshot(ns: Netns, links: readonly string[] = ['lan0', 'wan0']): Promise<string> {
  const tc = links.map((l) => `echo "## tc ${l}"; tc qdisc show dev ${l}; tc filter show dev ${l} ingress; tc filter show dev ${l} egress`).join('; ');
  return (
    (await snapshot(ns)) +
    (await ns.sh(
      'echo "## forwarding"; for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/tcp_early_demux /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/*/forwarding; do echo "$f $(cat $f)"; done; ' + tc,
    ))
  );
}

/** The namespace's whole routing and firewall state, as text to compare. */
export async function snapshot(ns: Netns): Promise<string> {
  return ns.sh(
    'echo "## ip rule"; ip rule; echo "## ip -6 rule"; ip -6 rule; ' +
      'echo "## ip route show table all"; ip route show table all; ' +
      'echo "## ip -6 route show table all"; ip -6 route show table all; ' +
      'echo "## nft list ruleset"; nft list ruleset',
  );
}

/** Starts `sluice run --config FILE --state STATE` in `ns` (not waiting for "ready"). */
export function spawnSluice(t: Test, ns: Netns, dir: string, yaml: string, state: string, file = 'sluice.yaml', env: NodeJS.ProcessEnv = {}): Engine {
  const cfg = path.join(dir, file);
  writeFileSync(cfg, yaml);
  // `env -u NODE_OPTIONS`: tap's @tapjs/processinfo puts its --import back into
  // every child's NODE_OPTIONS (an empty value in `env` is not enough), and
  // its signal-exit handlers would turn an early SIGTERM into death by SIGTERM.
  const engine = new Engine(ns.spawn(['env', '-u', 'NODE_OPTIONS', process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', state], { env: { ...childEnv, ...captureEnv(t), ...env } }));
  t.teardown(() => {
    if (!t.passing()) t.comment(`sluice (${cfg}):\n${engine.transcript()}`);
  });
  return engine;
}

export async function startSluice(t: Test, ns: Netns, dir: string, yaml: string, state: string, env: NodeJS.ProcessEnv = {}): Promise<Engine> {
  const engine = spawnSluice(t, ns, dir, yaml, state, 'sluice.yaml', env);
  await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
  return engine;
}

/** `sluice down --state FILE` in `ns`. */
export function sluiceDown(ns: Netns, state: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return ns.exec([process.execPath, SLUICE_BIN, 'down', '--state', state], { allowFail: true, env: childEnv });
}

/** Packets the kernel sent into / received from a link. */
export async function linkPackets(ns: Netns, dev: string): Promise<{ rx: number; tx: number }> {
  const out = await ns.sh(`ip -s -j link show dev ${dev}`);
  const [info] = JSON.parse(out) as Array<{ stats64: { rx: { packets: number }; tx: { packets: number } } }>;
  return { rx: info!.stats64.rx.packets, tx: info!.stats64.tx.packets };
}

/**
 * Env for a sluice that drops to nobody (run.user): tap's processinfo hook
 * rides along in every node child a test spawns and writes
 * .tap/processinfo/*.json at exit; as nobody it cannot write the checkout's,
 * so it is pointed at a directory under `dir` that nobody owns.
 */
export function nobodyTapEnv(dir: string): NodeJS.ProcessEnv {
  const info = path.join(dir, 'tapinfo');
  mkdirSync(info, { recursive: true });
  chownSync(info, 65534, 65534);
  return { _TAPJS_PROCESSINFO_CWD_: info };
}
