/**
 * Issue 10 ask 4: 10,000 idle proxied flows through a real `sluice run`
 * (gateway, TUN, the default policy: every flow direct, flow log on), and
 * the RSS of the whole process with them. The client namespace opens the
 * connections with test/fixtures/conn-holder.js, the server namespace holds
 * them; sluice terminates each in its stack and holds an outbound socket
 * for it. The goal, 100 MB, is not reached yet: see ONE_QUEUE_LIMIT_MB.
 * Every process here gets its soft open-file limit raised to the hard one
 * (10,000 sockets need more than the usual 1,024).
 */
import t from 'tap';
import path from 'node:path';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { requireRoot, waitForJsonLine } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { childEnv, createLab, Engine, SLUICE_BIN, tempDir, TUN } from '../fixtures/engine/lab.js';
import { SUITE_QUEUES } from '../fixtures/suite-queues.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const holder = path.resolve(here, '../fixtures/conn-holder.js');
const FLOWS = Number(process.env.IDLE_FLOWS ?? 10_000);
/**
 * The issue asks for under 100 MB; sluice is not there yet: measured
 * 109.4-110.2 MB at one queue (~68 MB right after "ready" since the config
 * schema is compiled at build time, not by ajv in the process:
 * build-validator.ts; 79-81 MB before, and 112.0-115.8 MB with the flows). That is once the burst's garbage is collected and
 * the old generation compacted: V8's memory reducer alone missed it in 3 of
 * 16 runs (137-168 MB 22 s after, old space ~97 MB committed for ~50 MB
 * live); each thread now asks for memory-reducing collections itself once
 * its heap stops growing (src/heap-reducer.ts). Of the settled base: the
 * node binary's resident pages, ~41 MB (shared, clean: a bare `node` maps
 * ~31 MB of them; the CommonJS loader, TurboFan and the modules' code paths
 * touch the rest), V8's heap ~16 MB (old space ~12 MB used: the modules'
 * code, bytecode and source text, yaml, ajv with the compiled config schema,
 * prom-client with @opentelemetry/api, pino), glibc's main heap ~8 MB and
 * four thread arenas ~3-4.5 MB (MALLOC_ARENA_MAX=2 in the environment: ~1 MB
 * less; mallopt(M_ARENA_MAX) from the addon changes nothing, V8's platform
 * threads have their arenas by then; malloc_trim(0) once idle gives back ~1
 * MB at one queue or two; --v8-pool-size=1 ~2 MB, but only as a node
 * option). The TUN's 4 MiB rx and tx buffers stay untouched while idle. Each
 * idle flow then adds ~3.5 KiB, nearly all V8 heap (a heap snapshot with
 * 10,000 flows, bytes per flow): the TcpConnection ~610 and its ~11 boxed
 * doubles ~180 (fields that hold performance.now() times or Infinity are
 * doubles in every connection; sequence numbers past 2^31), the outbound
 * net.Socket with its stream states, events and TCP wrap ~840 (plus ~500 of
 * malloc: libuv's handle, Node's TCPWrap), the TcpStream Duplex with its
 * states ~600, the flow record ~310 with its id (~56), TcpFlow ~260, Cubic,
 * RttEstimator, two ByteRings, Relay, FlowGuard ~550. Before: 116-120 MB
 * (117.9 median of three against 115.0 in the same run) while each flow kept
 * its match context (~160 bytes: MatchSeen now) and its "ip:port" texts (64
 * bytes: FLOW_ENDS_TEXT now), and when V8's memory reducer missed the burst;
 * 120-124 MB (85-87 MB at "ready") while ws and maxmind loaded at start and
 * every connection made its loss recovery (RACK-TLP and scoreboard, ~400
 * bytes) before it sent anything; ~142 MB (~7 KiB per flow: a closure and
 * context per stage of the flow, four address arrays, the SYN's request
 * object kept for the flow's life, ropes for the log text); ~205 MB before
 * the flat flow ids and the small nursery; ~285 MB before the ring pool and
 * the lazily made per-connection arrays. The bound catches a return to those
 * with a margin for GC timing; lower it as the cost comes down.
 */
/**
 * With worker threads (two queues: SLUICE_TEST_TUN_QUEUES=2, or the
 * default "auto" on two cores) each queue has its own V8 heap, modules,
 * stack and flow state, and the main thread mirrors every worker's flows
 * for the control plane: measured 148.6-157.4 MB for 10,000 idle flows at
 * two queues (~115-119 MB right after "ready", ~100 MB settled with no
 * flow: each worker's heap ~10-11 MB, the main thread's ~25 MB; glibc's
 * thread arenas hold 13-15 MB here, of which malloc_trim gives back ~1
 * MB); 145.1 MB (~104 MB at "ready") once the schema was compiled at build
 * time and a flow's mirror lost its closure and counter object. It was 149.2-161.4 MB before the heap reducer and the lighter flow
 * record, 159-164 MB before the lazy loss recovery and before the workers
 * stopped loading yaml; 237-253 MB before that; 343-394 MB while starting
 * a worker thread undid the small young generation of every thread
 * (src/young-generation.ts) and the workers re-sent every idle flow with
 * its match context every 5 s. The bound grows by EXTRA_QUEUE_MB per extra
 * queue.
 */
const ONE_QUEUE_LIMIT_MB = 125;
const EXTRA_QUEUE_MB = 40;
const RSS_LIMIT_MB = ONE_QUEUE_LIMIT_MB + EXTRA_QUEUE_MB * (SUITE_QUEUES - 1);
/** How long the flows sit idle before the reading that is asserted. */
const SETTLE_MS = Number(process.env.IDLE_SETTLE_MS ?? 20_000);
/**
 * sluice as it runs in production: without tap's NODE_OPTIONS (tap's
 * process-info hook puts its --import back into every child's environment,
 * and with it every module's parsed source map: over 20 MB that are the test
 * runner's, not sluice's; hence also `env -u` in the command) and without
 * NODE_V8_COVERAGE. IDLE_NODE_ARGS adds node options (diagnosis: --require
 * a memory printer, --heapsnapshot-signal).
 */
const sluiceEnv: NodeJS.ProcessEnv = { ...childEnv };
delete sluiceEnv.NODE_V8_COVERAGE;

function manyFiles(argv: string[]): string[] {
  return ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', ...argv];
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) / 1024;
}

t.test(`${FLOWS} idle proxied flows through sluice run stay under ${RSS_LIMIT_MB} MB of RSS`, { timeout: 240_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const lab = await createLab(t, 'idlemems');
  const { client, gateway, server } = await threeNamespaces(lab);
  const hard = Number((await gateway.sh('ulimit -Hn')).trim());
  if (hard < FLOWS + 1000) {
    t.fail(`the hard open-file limit is ${hard}; this test needs at least ${FLOWS + 1000} (raise it for the test runner)`);
    return;
  }
  const dir = tempDir(t, 'idlemem');
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(
    cfg,
    `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
# One client address opens 256 connections at once (conn-holder): past the
# default flood defences (64 dials in progress per source, SYN cookies from
# 128 half-open flows, whose over-cap dials are reset). This test measures
# memory, not those defences (test/system/synflood.test.ts does).
limits: { dialsPerSource: 512, synCookieThreshold: 512, pendingSyns: 2048 }
`,
  );
  const srv = server.spawn(manyFiles([process.execPath, holder, 'server', '9000']), { env: childEnv });
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const engine = new Engine(gateway.spawn(manyFiles(['env', '-u', 'NODE_OPTIONS', '-u', 'NODE_V8_COVERAGE', process.execPath, ...(process.env.IDLE_NODE_ARGS ?? '').split(' ').filter(Boolean), process.env.IDLE_SLUICE_BIN ?? SLUICE_BIN, 'run', '--config', cfg, '--state', path.join(dir, 'state.json')]), { env: sluiceEnv }));
  t.teardown(async () => {
    if (!t.passing()) t.comment(engine.transcript());
    await engine.stop(10_000);
  });
  await engine.waitFor((l) => l.msg === 'ready', 30_000, '"ready"');
  await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0 net.ipv4.conf.all.rp_filter=0`);
  const pid = engine.proc.pid!;
  const idleRss = rssMb(pid);

  const cli = client.spawn(manyFiles([process.execPath, holder, 'client', SERVER_V4, '9000', String(FLOWS)]), { env: childEnv });
  const done = await waitForJsonLine<{ event: string; connected: number; failed: number; ms: number }>(cli, (m) => m.event === 'connected', 180_000);
  t.equal(done.connected, FLOWS, `all ${FLOWS} connected through sluice (in ${done.ms} ms, ${done.failed} failed)`);
  // The server holds them too: every flow is proxied, not only terminated.
  const held = await new Promise<number>((resolve) => {
    void waitForJsonLine<{ event: string; held: number }>(srv, (m) => m.event === 'count', 30_000).then((m) => resolve(m.held));
    srv.kill('SIGUSR2');
  });
  t.ok(held >= FLOWS, `the server holds ${held} connections from sluice`);
  const sockets = readdirSync(`/proc/${pid}/fd`).length;
  t.ok(sockets >= FLOWS, `sluice holds ${sockets} descriptors (an outbound socket per flow)`);
  // Let the last handshakes settle, then read the whole process's resident
  // set: 2 s after the burst (still holding the garbage of 10,000
  // connection setups, promoted but not yet collected), and once idle, when
  // V8's memory reducer has run its compacting collections (it starts ~8 s
  // after the allocation rate drops). The idle figure is the one the issue
  // asks about and the one asserted.
  await new Promise((r) => setTimeout(r, 2000));
  const burstRss = rssMb(pid);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const rss = rssMb(pid);
  t.comment(`sluice RSS: ${idleRss.toFixed(1)} MB at start, ${burstRss.toFixed(1)} MB 2 s after the connections, ${rss.toFixed(1)} MB with ${FLOWS} idle flows ${(SETTLE_MS + 2000) / 1000} s after (${(((rss - idleRss) * 1024) / FLOWS).toFixed(2)} KiB per flow)`);
  if (process.env.IDLE_NODE_ARGS) t.comment(engine.stderr.split('\n').filter((l) => l.startsWith('MEM')).slice(-3).join('\n'));
  t.ok(rss < RSS_LIMIT_MB, `RSS ${rss.toFixed(1)} MB < ${RSS_LIMIT_MB} MB`);
  cli.kill('SIGTERM');
});
