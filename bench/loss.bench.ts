/**
 * Goodput under 5 % random wire loss (issue 12 item 4), sluice's stack
 * beside the kernel's own forwarding over the same lossy link: the setup of
 * test/system/wire-loss.test.ts (nft numgen drops on both ends of the
 * client–gateway veth, offloads off there), as a benchmark that prints
 * figures instead of asserting a floor.
 *
 *   npm run build && node dist/bench/loss.bench.js [rounds] [bytes]
 *
 * Each round: the kernel, then sluice, per family and direction; the
 * client's own TCP counters (nstat) are printed beside each transfer:
 * `retrans` (segments the client resent: on uploads, beyond the wire's
 * drops, that is spurious retransmission caused by what sluice's ACKs
 * told it) and `reord` (TCPSACKReorder: the client saw data it had taken
 * for lost acknowledged without a retransmission). `sluice.*` are sluice's
 * own stack counters over the transfer (its API's /v1/stats): on downloads
 * they are its sender's retransmissions, RTOs, lost retransmissions and
 * tail loss probes; `server.*` are the server's counters beside a kernel
 * run (on downloads, the kernel's sender). SLUICE_BIN_BASE runs an
 * earlier build's bin/sluice.js in the same rotation (before/after).
 */
import path from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { Lab, type Netns, type TestLike } from '../test/harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../test/harness/topology.js';
import { BLOB_SERVER, childEnv, Engine, SLUICE_BIN, TUN } from '../test/fixtures/engine/lab.js';
import { BenchContext } from './bench-lab.js';
import { WIRE_LOSS_CONFIG, lossRules } from '../test/fixtures/wire-loss.js';

async function nstat(ns: Netns): Promise<Record<string, number>> {
  const out = await ns.sh('nstat -az TcpRetransSegs TcpExtTCPSACKReorder TcpExtTCPLossProbes TcpExtTCPTimeouts TcpExtTCPFastRetrans TcpExtTCPSlowStartRetrans TcpExtTCPLostRetransmit TcpExtTCPSACKReneging 2>/dev/null');
  const r: Record<string, number> = {};
  for (const line of out.split('\n')) {
    const m = /^(\S+)\s+(\d+)/.exec(line);
    if (m) r[m[1]!] = Number(m[2]);
  }
  return r;
}

interface Row {
  who: string;
  what: string;
  mbit: number;
  retrans: number;
  reord: number;
  /** Other client counters that moved (nstat names without the prefix). */
  more: string;
}

/** Packets the kernel dropped on their way into sluice's TUN (its queue was full: sluice read too slowly). */
async function tunDrops(gateway: Netns): Promise<number> {
  const out = await gateway.sh(`ip -s -j link show dev ${TUN} 2>/dev/null || echo '[]'`);
  const [info] = JSON.parse(out) as Array<{ stats64?: { tx?: { dropped?: number } } }>;
  return info?.stats64?.tx?.dropped ?? 0;
}

/** The API the bench's sluice listens on (in the gateway namespace), for its own TCP counters. */
const API = '127.0.0.1:19090';
const API_SECRET = 'lossbench';
const STACK_COUNTERS = ['tcpRetransmits', 'tcpTimeouts', 'tcpLostRetransmits', 'tcpLossProbes'] as const;

/** sluice's stack counters (its own retransmissions: on downloads, what its sender resent), prefixed `sluice.`; none when it is not running. */
async function sluiceStats(gateway: Netns, running: boolean): Promise<Record<string, number>> {
  if (!running) return {};
  const out = await gateway.sh(`curl -sS -m 5 -H 'Authorization: Bearer ${API_SECRET}' http://${API}/v1/stats || echo '{}'`);
  const stack = (JSON.parse(out) as { stack?: Record<string, number> }).stack ?? {};
  const r: Record<string, number> = {};
  for (const k of STACK_COUNTERS) r[`sluice.${k.replace(/^tcp/, '')}`] = stack[k] ?? 0;
  return r;
}

/** The server's counters, prefixed `server.`: on kernel downloads, what the kernel's sender did over the lossy link. */
async function serverStats(server: Netns, kernel: boolean): Promise<Record<string, number>> {
  if (!kernel) return {};
  const r: Record<string, number> = {};
  for (const [k, v] of Object.entries(await nstat(server))) r[`server.${k}`] = v;
  return r;
}

async function timed(client: Netns, gateway: Netns, server: Netns, who: string, what: string, cmd: string, pick: (out: string) => number): Promise<Row> {
  const running = who !== 'kernel';
  const a = { ...(await nstat(client)), ...(await sluiceStats(gateway, running)), ...(await serverStats(server, !running)) };
  const da = await tunDrops(gateway);
  const out = await client.sh(cmd, { timeoutMs: 300_000, env: childEnv });
  const b = { ...(await nstat(client)), ...(await sluiceStats(gateway, running)), ...(await serverStats(server, !running)) };
  b.TunTxDropped = await tunDrops(gateway);
  a.TunTxDropped = da;
  const d = (k: string): number => (b[k] ?? 0) - (a[k] ?? 0);
  return { who, what, mbit: (pick(out) * 8) / 1e6, retrans: d('TcpRetransSegs'), reord: d('TcpExtTCPSACKReorder'), more: Object.keys(b).filter((k) => !['TcpRetransSegs', 'TcpExtTCPSACKReorder'].includes(k) && d(k) > 0).map((k) => `${k.replace(/^(\w+\.)?(TcpExtTCP|Tcp)/, '$1')} ${d(k)}`).join(' ') };
}

export async function runLossBench(rounds: number, size: number): Promise<Row[]> {
  const ctx = new BenchContext();
  const rows: Row[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-lossbench-'));
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'lossbnch');
    const { client, gateway, server } = await threeNamespaces(lab);
    await client.exec(['ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off', 'gro', 'off']);
    await gateway.exec(['ethtool', '-K', 'lan0', 'tso', 'off', 'gso', 'off', 'gro', 'off']);
    await client.exec(['nft', '-f', '-'], { input: lossRules('eth0', 'sluice_bench_loss') });
    await gateway.exec(['nft', '-f', '-'], { input: lossRules('lan0', 'sluice_bench_loss') });
    const srv = server.spawn([process.execPath, BLOB_SERVER, '8080'], { env: childEnv });
    ctx.teardown(() => void srv.kill('SIGTERM'));
    await new Promise<void>((resolve) => srv.stdout!.once('data', () => resolve()));
    const file = path.join(dir, 'up.bin');
    await client.sh(`head -c ${size} /dev/urandom > ${file}`, { timeoutMs: 120_000 });
    const cfg = path.join(dir, 'sluice.yaml');
    writeFileSync(cfg, `${WIRE_LOSS_CONFIG}api: { listen: "${API}", secret: ${API_SECRET} }\n`);
    const builds: [string, string | null][] = [['kernel', null], ['sluice', SLUICE_BIN]];
    if (process.env.SLUICE_BIN_BASE) builds.push(['base', process.env.SLUICE_BIN_BASE]);
    for (let round = 0; round < rounds; round++) {
      for (const [who, bin] of builds) {
        let engine: Engine | null = null;
        if (bin !== null) {
          engine = new Engine(gateway.spawn(['env', '-u', 'NODE_OPTIONS', process.execPath, bin, 'run', '--config', cfg, '--state', path.join(dir, 'state.json')], { env: childEnv }));
          await engine.waitFor((l) => l.msg === 'ready', 30_000, '"ready"');
        }
        for (const [family, host] of [['v4', SERVER_V4], ['v6', `[${SERVER_V6}]`]] as const) {
          rows.push(await timed(client, gateway, server, who, `${family} down`, `curl -sS -g -o /dev/null -w '%{speed_download}' http://${host}:8080/bytes/${size}`, Number));
          rows.push(await timed(client, gateway, server, who, `${family} up`, `curl -sS -g -o /dev/null -w '%{speed_upload}' -X POST -T ${file} http://${host}:8080/sink`, Number));
        }
        if (engine !== null) await engine.stop();
      }
    }
  } finally {
    await ctx.finish();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rounds = Number(process.argv[2] ?? 3);
  const size = Number(process.argv[3] ?? 200 * 1024 * 1024);
  const rows = await runLossBench(rounds, size);
  for (const r of rows) console.log(`${r.who.padEnd(7)} ${r.what.padEnd(8)} ${r.mbit.toFixed(0).padStart(5)} Mbit/s  client retrans ${r.retrans}  reord ${r.reord}  ${r.more}`);
  console.log('-- medians (ratio: median of per-round sluice/kernel)');
  const whos = [...new Set(rows.map((r) => r.who))];
  for (const what of [...new Set(rows.map((r) => r.what))]) {
    const k = rows.filter((r) => r.who === 'kernel' && r.what === what).map((r) => r.mbit);
    const parts = whos.map((who) => {
      const s = rows.filter((r) => r.who === who && r.what === what).map((r) => r.mbit);
      const ratio = who === 'kernel' ? '' : ` (${(median(s.map((x, i) => x / k[i]!)) * 100).toFixed(0)} %)`;
      return `${who} ${median(s).toFixed(0)}${ratio}`;
    });
    console.log(`${what.padEnd(8)} ${parts.join('  ')}`);
  }
}
