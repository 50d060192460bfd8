/**
 * Connection churn through the userspace stack: `sluice run` in gateway
 * mode (tun) in the standard client / gateway / server lab, the client
 * running 16 parallel loops of connect, one small HTTP request, the
 * response, close (the connection-rate row of bench/fastpath.bench.ts).
 * Every connection must get its response and none may take longer than a
 * generous bound (a lost SYN shows as a connection waiting 1 s and more for
 * the client's retransmission; two in a row exceed the bound). The rate goes
 * in a tap comment.
 *
 * Then the same loops with the client's port range narrowed to 64 ports, so
 * its kernel reuses each 4-tuple about ten times within seconds, while the
 * previous connection on it is still in TIME-WAIT in sluice's stack (sluice
 * closes first: the server ends the response): a new SYN on such a 4-tuple
 * must open a new connection (RFC 9293 3.10.7.4, RFC 6191), not be dropped.
 *
 * (The fastpath bench's TUN row stalled because it ran after the TPROXY rows
 * in the same gateway namespace, whose kernel then held TIME-WAIT sockets
 * for the client's 4-tuples: see the comment at the bench's row list.)
 *
 * Needs root, /dev/net/tun, ip.
 */
import t from 'tap';
import { requireRoot, waitForJsonLine } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { childEnv, createLab, startEngine, tempDir, TUN } from '../fixtures/engine/lab.js';

const LOOPS = 16;
const PER_LOOP = Number(process.env.CHURN_PER_LOOP ?? 40);
const BOUND_MS = 3000;

const SERVER = `require('net').createServer((s) => { s.on('error', () => {}); s.once('data', () => s.end('HTTP/1.1 200 OK\\r\\nContent-Length: 1\\r\\nConnection: close\\r\\n\\r\\ny')); }).listen(9100, () => console.log(JSON.stringify({ event: 'ready' })));`;
// Each loop: PER_LOOP sequential connections; a connection counts as failed when it gets no response or ends with an error, slow when it takes over BOUND_MS (it is then abandoned at 2 * BOUND_MS).
const CLIENT = `
const net = require('net'); const host = process.argv[1]; const perLoop = Number(process.argv[2]); const bound = Number(process.argv[3]);
let done = 0, failed = 0, slow = 0, maxMs = 0, live = ${LOOPS}; const t0 = Date.now();
function finish() { if (--live === 0) { console.log(JSON.stringify({ done, failed, slow, maxMs, ms: Date.now() - t0 })); process.exit(0); } }
function loop(left) {
  if (left === 0) return finish();
  const start = Date.now(); const s = net.connect(9100, host); let ok = false;
  const timer = setTimeout(() => s.destroy(), 2 * bound);
  s.once('connect', () => s.write('GET / HTTP/1.1\\r\\nHost: churn.example\\r\\n\\r\\n')); s.on('data', () => { ok = true; }); s.on('error', () => { ok = false; });
  s.once('close', () => { clearTimeout(timer); const ms = Date.now() - start; if (ms > maxMs) maxMs = ms; if (ms > bound) slow++; if (ok) done++; else failed++; loop(left - 1); });
}
for (let i = 0; i < ${LOOPS}; i++) loop(perLoop);`;

t.test('16 parallel loops of short connections through gateway TUN mode all complete quickly', async (t) => {
  if (!requireRoot(t)) return;
  const lab = await createLab(t, 'connchrn');
  const { client, gateway, server } = await threeNamespaces(lab);
  await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
  const cs = server.spawn([process.execPath, '-e', SERVER], { env: childEnv });
  await waitForJsonLine(cs, (m: { event?: string }) => m.event === 'ready');
  const dir = tempDir(t, 'churn');
  const engine = await startEngine(
    t,
    gateway,
    dir,
    `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
`,
  );
  await gateway.sh(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`);
  const total = LOOPS * PER_LOOP;
  for (const [label, ports] of [
    ['the default port range', null],
    ['64 client ports (each 4-tuple reused while in TIME-WAIT in sluice)', '40000 40063'],
  ] as const) {
    if (ports !== null) await client.sh(`sysctl -qw net.ipv4.ip_local_port_range="${ports}"`);
    const r = await client.exec([process.execPath, '-e', CLIENT, SERVER_V4, String(PER_LOOP), String(BOUND_MS)], {
      timeoutMs: PER_LOOP * 2 * BOUND_MS + 60_000,
      env: childEnv,
    });
    const res = JSON.parse(r.stdout.trim()) as { done: number; failed: number; slow: number; maxMs: number; ms: number };
    t.comment(`${label}: ${res.done}/${total} connections in ${res.ms} ms, ${((res.done * 1000) / res.ms).toFixed(0)} connections/s through the TUN; slowest ${res.maxMs} ms`);
    t.equal(res.done, total, `${label}: every connection got its response (${res.failed} failed)`);
    t.equal(res.slow, 0, `${label}: no connection took over ${BOUND_MS} ms (slowest ${res.maxMs} ms)`);
  }
  t.ok(engine.running, 'sluice is still running');
  await engine.stop();
});
