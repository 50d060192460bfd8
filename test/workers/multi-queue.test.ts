/**
 * tun.queues > 1 end to end (src/workers/): `sluice run` with a
 * three-queue TUN, one worker thread per queue, in the gateway namespace.
 *
 * - A name resolves to one fake IP whichever worker answers the query
 *   (queries from many source ports spread over the queues; the main
 *   thread owns the pool).
 * - Twelve downloads to fake-IP names land on several queues (the flow
 *   lines say which worker carried them).
 * - A worker killed mid-transfer (POST /v1/workers/:queue/kill) is reported
 *   and restarted; exactly its own flows fail, every other download ends
 *   complete with the right SHA-256, and new flows through the restarted
 *   set of workers work.
 * - /v1/stats and /v1/workers are one view over the workers; SIGTERM ends
 *   everything promptly with exit 0.
 *
 * Needs root, /dev/net/tun, curl, dig, dnsmasq.
 */
import t from 'tap';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { BLOB_SERVER, TUN, childEnv, createLab, requireCommands, startDnsmasq, startEngine, steer, tempDir, timed, waitListening } from '../fixtures/engine/lab.js';
import { blobSha256 } from '../fixtures/blob.js';

// This file sets its own queue count: the suite-wide override (SLUICE_TEST_TUN_QUEUES) must not change it.
delete (childEnv as NodeJS.ProcessEnv).SLUICE_TEST_TUN_QUEUES;

const RESOLVER = '198.51.100.53';
const API = '127.0.0.1:9090';
const SECRET = 'multi-queue-test-secret';
const QUEUES = 3;
const FLOWS = 12;
/**
 * Per download of the first round: long enough at the rate limit to be
 * mid-transfer when the worker is killed (16 s). At 12 MiB (8 s) a loaded
 * machine sometimes took that long to list the twelve flows: a download of
 * the victim had ended by the kill (complete, its flow line lost with the
 * worker), and "exactly the killed worker's downloads failed" did not hold.
 */
const SLOW_BYTES = 24 << 20;
const SLOW_RATE = '1500k';
const FAST_BYTES = 2 << 20;

const CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN}, queues: ${QUEUES} }
dns:
  mode: fake-ip
  hijack: true
  fakeIp: { ipv4Range: 198.18.0.0/16, persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
outbounds:
  - { name: direct, type: direct }
final: direct
api: { listen: "${API}", secret: ${SECRET} }
`;

interface WorkersView {
  queues: number;
  failures: number;
  workers: { queue: number; state: string; restarts: number; flows: number; tcpFlows: number; lastExit: { error: string | null; flowsLost: number } | null }[];
}

async function api(gateway: Netns, method: string, p: string): Promise<unknown> {
  const r = await gateway.exec(['curl', '-sS', '--max-time', '10', '-X', method, '-H', `Authorization: Bearer ${SECRET}`, `http://${API}${p}`], { timeoutMs: 20_000 });
  return JSON.parse(r.stdout) as unknown;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function sha256File(file: string): { bytes: number; sha: string } {
  try {
    const b = readFileSync(file);
    return { bytes: b.length, sha: createHash('sha256').update(b).digest('hex') };
  } catch {
    return { bytes: 0, sha: '' };
  }
}

interface Download {
  name: string;
  file: string;
  code: number;
  localPort: number;
  bytes: number;
  sha: string;
}

async function download(client: Netns, dir: string, name: string, ip: string, size: number, rate: string | null): Promise<Download> {
  const file = path.join(dir, `${name}.bin`);
  const args = ['curl', '-sS', '--max-time', '120', '-o', file, '-w', '%{local_port}', '--resolve', `${name}:8081:${ip}`];
  if (rate !== null) args.push('--limit-rate', rate);
  args.push(`http://${name}:8081/bytes/${size}`);
  const r = await timed(client, args, 150_000);
  const got = sha256File(file);
  return { name, file, code: r.code, localPort: Number(r.stdout.trim()) || 0, ...got };
}

t.test('tun.queues 3: fake-IP names over several worker threads; a killed worker is restarted and only its flows end', { timeout: 300_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'dig', 'dnsmasq'])) return;
  const dir = tempDir(t, 'mqueue');
  const lab = await createLab(t, 'mqueuesa');
  const { client, gateway, server } = await threeNamespaces(lab);
  await startDnsmasq(t, server, { 'bulk.example': SERVER_V4 });
  const blob = server.spawn([process.execPath, BLOB_SERVER, '8081'], { env: childEnv });
  t.teardown(() => {
    blob.kill('SIGKILL');
  });
  await waitListening(server, 'tcp', 8081, blob, 'blob server');
  const engine = await startEngine(t, gateway, dir, CONFIG);
  await steer(gateway, TUN);
  t.ok(engine.lines.some((l) => l.msg === 'worker threads serving the TUN queues' && l.queues === QUEUES), 'three worker threads serve the TUN');

  // One name asked many times (new source port each time, so over the queues): one answer.
  const answers = new Set<string>();
  for (let i = 0; i < 8; i++) {
    const r = await timed(client, ['dig', `@${RESOLVER}`, 'same.bulk.example', 'A', '+short', '+time=3', '+tries=2'], 20_000);
    answers.add(r.stdout.trim());
  }
  t.equal(answers.size, 1, `one fake IP for a name whichever worker answers (${[...answers].join(', ')})`);
  t.match([...answers][0], /^198\.18\./, 'the answer is from the fake range');

  const ips = new Map<string, string>();
  for (let i = 0; i < FLOWS; i++) {
    const name = `q${i}.bulk.example`;
    const r = await timed(client, ['dig', `@${RESOLVER}`, name, 'A', '+short', '+time=3', '+tries=2'], 20_000);
    ips.set(name, r.stdout.trim());
  }
  t.equal(new Set(ips.values()).size, FLOWS, 'every name has its own fake IP');

  // Round one: twelve rate-limited downloads; one worker carrying some of them is killed mid-transfer.
  const round1 = [...ips].map(([name, ip]) => download(client, dir, name, ip, SLOW_BYTES, SLOW_RATE));
  // Every download open (the flow list also holds the digs' UDP sessions: count the named TCP flows).
  const named = (f: { network: string; domain: string | null }): boolean => f.network === 'tcp' && /^q\d+\.bulk\.example$/.test(f.domain ?? '');
  let listed = 0;
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    const l = (await api(gateway, 'GET', '/v1/flows')) as { flows: { network: string; domain: string | null }[] };
    listed = l.flows.filter(named).length;
    if (listed >= FLOWS) break;
    await sleep(200);
  }
  t.equal(listed, FLOWS, `/v1/flows lists every worker's flows with its fake-IP name (${listed})`);
  const conns = (await api(gateway, 'GET', '/connections')) as { connections: { metadata: { host: string } }[] };
  t.equal(conns.connections.filter((c) => /^q\d+\.bulk\.example$/.test(c.metadata.host)).length, FLOWS, 'and so does /connections');
  const view = (await api(gateway, 'GET', '/v1/workers')) as WorkersView;
  t.equal(view.workers.reduce((n, w) => n + w.tcpFlows, 0), FLOWS, 'every download shows in /v1/workers');
  const busy = view.workers.filter((w) => w.tcpFlows > 0);
  t.ok(busy.length >= 2, `the downloads are spread over several queues (${view.workers.map((w) => `${w.queue}:${w.tcpFlows}`).join(' ')})`);
  const victim = busy.sort((a, b) => a.tcpFlows - b.tcpFlows)[0]!;
  // The flows' bytes (at most one report old): every download must still be under way when its worker dies.
  const progress = (await api(gateway, 'GET', '/connections')) as { connections: { metadata: { host: string }; download: number }[] };
  const furthest = Math.max(...progress.connections.filter((c) => /^q\d+\.bulk\.example$/.test(c.metadata.host)).map((c) => c.download));
  t.ok(furthest < SLOW_BYTES * 0.9, `every download is mid-transfer at the kill (the furthest at ${((furthest / SLOW_BYTES) * 100).toFixed(0)} %)`);
  // The TCP buffer budget's count (limits.tcpBufferMiB) holds the rings of the slow downloads, the victim's among them.
  const heldBefore = ((await api(gateway, 'GET', '/v1/stats')) as { tcpBuffers: { usedBytes: number } }).tcpBuffers.usedBytes;
  t.ok(heldBefore > 0, `the workers' rings are counted in the process's TCP buffer budget (${heldBefore} bytes)`);
  const killed = (await api(gateway, 'POST', `/v1/workers/${victim.queue}/kill`)) as { killed: number };
  t.equal(killed.killed, victim.queue, `worker ${victim.queue} (${victim.tcpFlows} downloads) killed mid-transfer`);

  const results = await Promise.all(round1);
  const failed = results.filter((r) => r.code !== 0 || r.bytes !== SLOW_BYTES);
  const good = results.filter((r) => r.code === 0 && r.bytes === SLOW_BYTES);
  t.equal(failed.length, victim.tcpFlows, `exactly the killed worker's downloads failed (${failed.length} of its ${victim.tcpFlows})`);
  t.equal(good.length, FLOWS - victim.tcpFlows, `the other workers' downloads finished (${good.length})`);
  const want = blobSha256(SLOW_BYTES);
  for (const r of good) t.equal(r.sha, want, `${r.name}: SHA-256 intact`);

  // The flow lines of the downloads that finished name a surviving worker.
  await sleep(500);
  const bySrcPort = new Map<number, unknown>();
  for (const f of engine.flows()) bySrcPort.set(Number(String(f.src).split(':').pop()), f.queue);
  for (const r of good) t.not(bySrcPort.get(r.localPort), victim.queue, `${r.name} was carried by another worker (queue ${String(bySrcPort.get(r.localPort))})`);
  for (const r of failed) t.notOk(bySrcPort.has(r.localPort) && bySrcPort.get(r.localPort) !== victim.queue, `${r.name} was on the killed worker`);

  // Reported and restarted.
  await engine.waitFor((l) => l.msg === 'worker failed; restarting it (the other queues keep their flows)' && l.queue === victim.queue, 20_000, 'the failure line');
  await engine.waitFor((l) => l.msg === 'worker restarted' && l.queue === victim.queue, 30_000, '"worker restarted"');
  const after = (await api(gateway, 'GET', '/v1/workers')) as WorkersView;
  const v = after.workers[victim.queue]!;
  t.equal(v.state, 'running', 'the restarted worker runs');
  t.equal(v.restarts, 1, 'one restart');
  t.equal(v.lastExit?.error, 'killed through the control API', 'the failure is reported with its cause');
  t.equal(after.failures, 1, 'one failure counted');

  // Round two: every queue, the restarted one included, carries new flows intact.
  const round2 = await Promise.all([...ips].map(([name, ip]) => download(client, dir, `${name}`, ip, FAST_BYTES, null)));
  const want2 = blobSha256(FAST_BYTES);
  for (const r of round2) t.ok(r.code === 0 && r.sha === want2, `${r.name} again: complete, SHA-256 intact (exit ${r.code}, ${r.bytes} bytes)`);
  await sleep(500);
  const queues2 = new Set<unknown>();
  for (const f of engine.flows()) {
    const port = Number(String(f.src).split(':').pop());
    if (round2.some((r) => r.localPort === port)) queues2.add(f.queue);
  }
  t.ok(queues2.size >= 2, `round two spread over queues ${[...queues2].join(', ')}`);

  // The dead worker's rings left the budget's count with it: every flow has ended, nothing is counted.
  let held = -1;
  for (let i = 0; i < 50 && held !== 0; i++) {
    if (i > 0) await sleep(100);
    held = ((await api(gateway, 'GET', '/v1/stats')) as { tcpBuffers: { usedBytes: number } }).tcpBuffers.usedBytes;
  }
  t.equal(held, 0, "the killed worker's ring stores left the TCP buffer budget's count (no leak)");

  // One view: the counters add up over the workers.
  const stats = (await api(gateway, 'GET', '/v1/stats')) as { engine: { tcpFlows: number }; stack: { tcpFlowsAccepted: number }; tun: { rxPackets: number }; workers: WorkersView; flows: { closed: number } };
  t.ok(stats.engine.tcpFlows >= FLOWS + good.length, `/v1/stats engine.tcpFlows sums the workers (${stats.engine.tcpFlows})`);
  t.ok(stats.stack.tcpFlowsAccepted >= FLOWS + good.length, `/v1/stats stack sums the workers (${stats.stack.tcpFlowsAccepted})`);
  t.ok(stats.tun.rxPackets > 0, 'TUN counters come from the workers');
  t.ok(stats.flows.closed >= FLOWS + good.length, `closed flows counted over the workers (${stats.flows.closed})`);
  t.equal(stats.workers.queues, QUEUES, '/v1/stats lists the workers');

  const started = Date.now();
  const exit = await engine.stop();
  t.equal(exit.code, 0, 'SIGTERM: exit 0');
  t.ok(Date.now() - started < 8000, `SIGTERM ends the workers too, promptly (${Date.now() - started} ms)`);
});
