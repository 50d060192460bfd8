/**
 * The head the gateway tests share: the client / gateway / server
 * namespaces with the gateway's own forwarding off (whatever reaches the
 * server went through sluice or its kernel path, never plain routing), the
 * gateway's YAML (real-IP, everything direct, gateway mode MODE on lan0),
 * a helper server written as a node one-liner that prints a line once it
 * listens, and the tproxy-ebpf program's assignment counters.
 */
import type { ChildProcess } from 'node:child_process';
import type { Test } from 'tap';
import type { Netns } from '../harness/netns.js';
import { threeNamespaces, type Topology } from '../harness/topology.js';
import { createLab, startWebServer, TUN, type Engine, type LogLine } from '../fixtures/engine/lab.js';
import { settle } from './workstation.js';

/** Reverse-path filtering off: replies from the kernel path and from sluice arrive on different links. */
export const NO_RP_FILTER = ['net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0'];

export interface GatewayLabOptions {
  /** More `key=value` sysctls for the gateway. */
  sysctl?: readonly string[];
  /** Start the web server (startWebServer) in the server namespace. */
  web?: boolean;
}

/** The three namespaces, the gateway's forwarding off (plus `o.sysctl`), its addresses settled. */
export async function gatewayLab(t: Test, tag: string, o: GatewayLabOptions = {}): Promise<Topology> {
  const lab = await createLab(t, tag);
  const topo = await threeNamespaces(lab);
  await topo.gateway.sh(['sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0', ...(o.sysctl ?? [])].join(' '));
  await settle(topo.gateway);
  if (o.web === true) await startWebServer(t, topo.server);
  return topo;
}

/** The YAML the gateway tests start with: JSON logs, the lab's TUN, real-IP DNS without the hijack, a direct outbound (more outbound lines may follow). */
export const CONFIG_HEAD = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false }
outbounds:
  - { name: direct, type: direct }
`;

/** sluice.yaml of a gateway in `mode` with every flow direct; `extra` is appended (top-level keys). */
export function gatewayConfig(mode: string, extra = ''): string {
  return `${CONFIG_HEAD}rules: []
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: ${mode} }
${extra}`;
}

/** Runs `script` with node in `ns` (NODE_OPTIONS cleared), killed at teardown; resolves once it prints its first output. */
export async function startNodeScript(t: Test, ns: Netns, script: string): Promise<ChildProcess> {
  const proc = ns.spawn([process.execPath, '-e', script], { env: { ...process.env, NODE_OPTIONS: '' } });
  t.teardown(() => {
    proc.kill('SIGTERM');
  });
  await new Promise<void>((resolve) => proc.stdout!.once('data', () => resolve()));
  return proc;
}

export type AssignCounters = Record<'listener' | 'flow' | 'local' | 'noListener' | 'assignFailed' | 'unsupported', number>;

/** The TC program's socket-assignment counters (tproxy-ebpf), from the counters line SIGUSR2 makes sluice write. */
export async function assignCounters(engine: Engine): Promise<AssignCounters> {
  const n = engine.lines.length;
  engine.proc.kill('SIGUSR2');
  const line = await engine.waitFor<LogLine & { classifierAssign?: AssignCounters }>((l) => l.msg === 'counters' && engine.lines.indexOf(l) >= n, 5000, 'a counters line');
  if (line.classifierAssign === undefined) throw new Error(`no assignment counters in ${JSON.stringify(line)}`);
  return line.classifierAssign;
}
