/**
 * The paths of the peer benchmark (bench/peers.bench.ts). Each one is built
 * in a fresh harness Lab (client, gateway and server namespaces of
 * test/harness/topology.ts, nginx and iperf3 in the server) so that no path
 * inherits another's sockets, conntrack entries or TIME-WAIT state:
 *
 *   kernel       the gateway forwards client -> server (plain routing)
 *   node relay   nftables in the gateway redirects the client's TCP to
 *                bench/peer-relay.ts (`net` + `pipe`), which connects on
 *   slirp4netns  the client has no veth: slirp4netns, running in the
 *                gateway, gives it a tap (libslirp's TCP/IP stack) and
 *                opens the gateway's own sockets to the server
 *   pasta        the same place for pasta (passt's L2-to-L4 translator)
 *   sluice       `sluice run` in the gateway, gateway mode tun: the default
 *                policy (everything direct), flow log on, TUN MTU 8500,
 *                offloads on
 *
 * slirp4netns and pasta use their throughput MTU (65520, pasta's default and
 * the one rootlesskit and podman give slirp4netns); the veths are 1500.
 * Every process is started through the Lab (killed by PID at teardown); the
 * nftables table lives in the gateway namespace and goes with it.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Lab, Netns } from '../test/harness/netns.js';
import { waitForJsonLine } from '../test/harness/netns.js';
import { threeNamespaces, SERVER_V4, type Topology } from '../test/harness/topology.js';
import { childEnv, collectOutput, SLUICE_BIN, TUN, waitListening } from '../test/fixtures/engine/lab.js';
import type { PathRole } from './peers-table.js';
import { writeNginxConf } from '../test/fixtures/nginx-conf.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const RELAY = path.join(here, 'peer-relay.js');

export const HTTP_PORT = 80;
export const IPERF_PORT = 5201;
/** The 1 KiB body wrk fetches. */
export const SMALL_PATH = '/1k.bin';
/** The tap side of slirp4netns and pasta: a documentation range no other link of the lab uses. */
const TAP_NET = '198.51.100';
const TAP_MTU = 65520;
/**
 * sluice's TUN MTU: 8500 as in the table; PEERS_SLUICE_MTU=1500 for
 * the MTU-1500 comparison of issue 10's ask 3 (the other paths' links are
 * 1500 already, the taps of slirp4netns and pasta excepted).
 */
export const SLUICE_MTU = peersSluiceMtu(process.env.PEERS_SLUICE_MTU);

function peersSluiceMtu(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 8500;
  const mtu = Number(raw);
  if (!Number.isInteger(mtu) || mtu < 1280 || mtu > 65535) throw new Error(`PEERS_SLUICE_MTU must be an integer from 1280 to 65535, not ${JSON.stringify(raw)}`);
  return mtu;
}

/** A path, running: where the clients run and whose CPU and memory count. */
export interface RunningPath {
  client: Netns;
  /** The path's own processes; empty for the kernel. */
  pids: number[];
  /** Everything those processes printed, for an error report. */
  output: () => string;
  /** Whether every process of the path is still running. */
  alive: () => boolean;
  /** For sluice: the flow lines written so far (the flow log is on). */
  flowLines?: () => number;
}

export interface PeerPath {
  id: 'kernel' | 'relay' | 'slirp4netns' | 'pasta' | 'sluice' | 'sluice-base';
  name: string;
  role: PathRole;
  /** Commands the path needs besides the common ones (iperf3, wrk, nginx). */
  needs: string[];
  /** Sets the path up in `topo` (fresh, servers running); `dir` is this lab's scratch directory. */
  start(topo: Topology, dir: string): Promise<RunningPath>;
}

async function until(what: string, timeoutMs: number, check: () => Promise<boolean> | boolean, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (child !== undefined && (child.exitCode !== null || child.signalCode !== null)) throw new Error(`${what}: the process exited (${child.exitCode ?? child.signalCode})`);
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function running(children: ChildProcess[]): () => boolean {
  return () => children.every((c) => c.exitCode === null && c.signalCode === null);
}

/** nginx in the foreground as one process (no orphaned workers if it is SIGKILLed), serving SMALL_PATH, access log off. */
async function startNginx(server: Netns, dir: string): Promise<ChildProcess> {
  const root = path.join(dir, 'www');
  mkdirSync(root, { recursive: true });
  writeFileSync(path.join(root, SMALL_PATH.slice(1)), Buffer.alloc(1024, 'x'));
  const conf = writeNginxConf(dir, {
    errorLog: 'stderr warn',
    workerConnections: 4096,
    // wrk's 50 keep-alive connections must stay open for the whole run.
    http: ['default_type application/octet-stream;', 'keepalive_requests 100000000;'],
    server: [`listen ${SERVER_V4}:${HTTP_PORT} backlog=4096;`, `root ${root};`],
  });
  const proc = server.spawn(['nginx', '-c', conf, '-p', dir]);
  collectOutput(proc);
  await waitListening(server, 'tcp', HTTP_PORT, proc, 'nginx', 15_000);
  return proc;
}

/** A fresh client / gateway / server topology with the servers every path reaches: nginx and `iperf3 -s`. */
export async function peerTopology(lab: Lab, dir: string): Promise<Topology> {
  const topo = await threeNamespaces(lab);
  await startNginx(topo.server, dir);
  const iperf = topo.server.spawn(['iperf3', '-s', '-p', String(IPERF_PORT)]);
  collectOutput(iperf);
  await waitListening(topo.server, 'tcp', IPERF_PORT, iperf, 'iperf3 -s', 15_000);
  return topo;
}

const kernel: PeerPath = {
  id: 'kernel',
  name: 'kernel (routing between namespaces)',
  role: 'baseline',
  needs: [],
  async start(topo) {
    return { client: topo.client, pids: [], output: () => '', alive: () => true };
  },
};

const relay: PeerPath = {
  id: 'relay',
  name: 'bare Node relay (`net` + `pipe`)',
  role: 'peer',
  needs: ['nft'],
  async start(topo) {
    const proc = topo.gateway.spawn([process.execPath, RELAY, SERVER_V4, String(HTTP_PORT), String(IPERF_PORT)], { env: childEnv });
    const output = collectOutput(proc);
    await waitForJsonLine(proc, (m: { event?: string }) => m.event === 'ready', 15_000);
    // The relay's own connections to the server leave through OUTPUT, which a prerouting rule never sees: no loop.
    await topo.gateway.exec(['nft', '-f', '-'], {
      input: `table ip peers_relay {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname "lan0" tcp dport { ${HTTP_PORT}, ${IPERF_PORT} } redirect\n  }\n}\n`,
    });
    return { client: topo.client, pids: [proc.pid!], output, alive: running([proc]) };
  },
};

/**
 * Starts a process in the gateway that gives the client (its veth taken
 * away first, and its routes with it) a tap as its only link, and waits
 * until the client has a default route through that tap.
 */
async function startTapPeer(topo: Topology, argv: string[], what: string): Promise<RunningPath> {
  await topo.client.exec(['ip', 'link', 'del', 'eth0']);
  const proc = topo.gateway.spawn(argv);
  const output = collectOutput(proc);
  await until(`${what}: tap0 configured in the client namespace`, 15_000, async () => {
    const r = await topo.client.exec(['ip', '-4', 'route', 'show', 'default', 'dev', 'tap0'], { allowFail: true });
    return r.code === 0 && r.stdout.trim() !== '';
  }, proc);
  return { client: topo.client, pids: [proc.pid!], output, alive: running([proc]) };
}

const slirp: PeerPath = {
  id: 'slirp4netns',
  name: 'slirp4netns (C, libslirp)',
  role: 'peer',
  needs: ['slirp4netns'],
  start(topo) {
    return startTapPeer(topo, [
      'slirp4netns', '--configure', `--mtu=${TAP_MTU}`, `--cidr=${TAP_NET}.0/24`, '--disable-host-loopback', '--disable-dns',
      '--netns-type=path', `/var/run/netns/${topo.client.name}`, 'tap0',
    ], 'slirp4netns');
  },
};

const pasta: PeerPath = {
  id: 'pasta',
  name: 'pasta (C, passt)',
  role: 'peer',
  needs: ['pasta'],
  start(topo) {
    return startTapPeer(topo, [
      // --runas 0:0: as root pasta otherwise drops to nobody before joining the namespace, and then cannot.
      'pasta', '--foreground', '--quiet', '--runas', '0:0', '--config-net', '-4',
      '--address', `${TAP_NET}.100`, '--netmask', '24', '--gateway', `${TAP_NET}.1`, '--no-map-gw',
      '--interface', 'wan0', '--ns-ifname', 'tap0', '--mtu', String(TAP_MTU),
      '--tcp-ports', 'none', '--udp-ports', 'none', '--tcp-ns', 'none', '--udp-ns', 'none',
      '--no-dhcp', '--no-ndp', '--no-dhcpv6', '--no-ra',
      '--netns', topo.client.name,
    ], 'pasta');
  },
};

/** The default policy (no rules: everything direct), the flow log on (level info, the default), TUN MTU 8500, offloads on. */
export const SLUICE_CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN}, mtu: ${SLUICE_MTU}, offload: true }
dns: { fakeIp: { persistPath: null } }
gateway: { enabled: true, lan: [lan0], mode: tun }
`;

/** `sluice run` from the checkout `bin` belongs to (this one, or PEERS_SLUICE_BASE's for a before/after in one run). */
function sluicePath(id: 'sluice' | 'sluice-base', name: string, bin: string): PeerPath {
  return {
    id,
    name,
    role: 'subject',
    needs: [],
    async start(topo, dir) {
      const config = path.join(dir, 'sluice.yaml');
      writeFileSync(config, SLUICE_CONFIG);
      // The log goes to a file, as a service's would: read through a pipe, every flow line would cost this process CPU too.
      const logFile = path.join(dir, 'sluice.log');
      const fd = openSync(logFile, 'w');
      const proc = topo.gateway.spawn([process.execPath, bin, 'run', '--config', config, '--state', path.join(dir, 'state.json')], {
        env: childEnv,
        stdio: ['ignore', fd, fd],
      });
      closeSync(fd);
      const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
      await until('sluice run: "ready" in its log', 30_000, () => log().includes('"msg":"ready"'), proc).catch((err: Error) => {
        throw new Error(`${err.message}\n${log().slice(-4000)}`);
      });
      await topo.gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
      return {
        client: topo.client,
        pids: [proc.pid!],
        output: () => log().slice(-4000),
        alive: running([proc]),
        flowLines: () => log().split('"msg":"flow"').length - 1,
      };
    },
  };
}

/**
 * PEERS_SLUICE_BASE=DIR (a built checkout of an earlier commit) adds its
 * `sluice run` as one more path, measured in the same run and the same
 * rotation as this checkout's: the before/after of a change.
 */
const base = process.env.PEERS_SLUICE_BASE;

export const PATHS: readonly PeerPath[] = [
  kernel,
  relay,
  slirp,
  pasta,
  sluicePath('sluice', '`sluice run`', SLUICE_BIN),
  ...(base !== undefined && base !== '' ? [sluicePath('sluice-base', `\`sluice run\` (${path.basename(base)})`, path.join(base, 'bin/sluice.js'))] : []),
];
