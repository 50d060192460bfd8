/**
 * limits.tcpBufferMiB end to end (src/tcp/buffer-budget.ts): `sluice run`
 * with a 1 MiB budget carries eight downloads to clients that read slower
 * than the server sends (curl --limit-rate), the case where every flow's
 * send ring would fill to tcp.sendBufferBytes (1 MiB each, 8 MiB in all).
 * Every download arrives intact (SHA-256); the ring stores sluice held at
 * their peak stay near the budget (at most the budget per queue, the
 * stores' headroom being read per thread, plus the 64 KiB floor per flow);
 * /v1/stats and the metrics show it; SIGTERM still ends it at once.
 *
 * Needs root, /dev/net/tun, curl.
 */
import t from 'tap';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { BLOB_SERVER, TUN, childEnv, createLab, requireCommands, startEngine, steer, tempDir, timed, waitListening } from '../fixtures/engine/lab.js';
import { blobSha256 } from '../fixtures/blob.js';
import { SUITE_QUEUES } from '../fixtures/suite-queues.js';
import { FLOOR_BYTES } from '../../src/tcp/buffer-budget.js';

const API = '127.0.0.1:9090';
const SECRET = 'tcp-buffer-budget-test-secret';
const FLOWS = 8;
const BYTES = 12 << 20;
const RATE = '6M';
const MiB = 1 << 20;

const CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false }
limits: { tcpBufferMiB: 1 }
api: { listen: "${API}", secret: ${SECRET} }
`;

interface BudgetStats {
  usedBytes: number;
  limitBytes: number;
  peakBytes: number;
  pressureEvents: number;
}

async function apiGet(gateway: Netns, p: string): Promise<string> {
  const r = await gateway.exec(['curl', '-sS', '--max-time', '10', '-H', `Authorization: Bearer ${SECRET}`, `http://${API}${p}`], { timeoutMs: 20_000 });
  return r.stdout;
}

function sha256File(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return '';
  }
}

t.test('limits.tcpBufferMiB: 1 holds eight slow-client downloads near 1 MiB of ring stores, every byte intact', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl'])) return;
  const dir = tempDir(t, 'tcpbudget');
  const lab = await createLab(t, 'tcpbudgt');
  const { client, gateway, server } = await threeNamespaces(lab);
  const blob = server.spawn([process.execPath, BLOB_SERVER, '8081'], { env: childEnv });
  t.teardown(() => {
    blob.kill('SIGKILL');
  });
  await waitListening(server, 'tcp', 8081, blob, 'blob server');
  const engine = await startEngine(t, gateway, dir, CONFIG);
  t.teardown(() => engine.stop(10_000));
  await steer(gateway, TUN);

  const before = JSON.parse(await apiGet(gateway, '/v1/stats')) as { tcpBuffers: BudgetStats };
  t.equal(before.tcpBuffers.limitBytes, MiB, '/v1/stats shows the limit');

  const downloads = Array.from({ length: FLOWS }, (_, i) => {
    const file = path.join(dir, `d${i}.bin`);
    return timed(client, ['curl', '-sS', '--max-time', '90', '--limit-rate', RATE, '-o', file, `http://${SERVER_V4}:8081/bytes/${BYTES}`], 100_000).then((r) => ({ r, file }));
  });
  // While they run: the stores held, as the API reports them.
  let sampled = 0;
  let pressed = false;
  const sampling = (async () => {
    for (let i = 0; i < 40; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const s = (JSON.parse(await apiGet(gateway, '/v1/stats')) as { tcpBuffers: BudgetStats }).tcpBuffers;
      if (s.usedBytes > sampled) sampled = s.usedBytes;
      if (s.pressureEvents > 0) pressed = true;
    }
  })();
  const results = await Promise.all(downloads);
  await sampling;
  for (const [i, { r, file }] of results.entries()) {
    t.equal(r.code, 0, `download ${i} completed (${r.stderr.trim()})`);
    t.equal(sha256File(file), blobSha256(BYTES), `download ${i} intact (SHA-256)`);
  }
  const after = (JSON.parse(await apiGet(gateway, '/v1/stats')) as { tcpBuffers: BudgetStats }).tcpBuffers;
  const bound = SUITE_QUEUES * MiB + FLOWS * FLOOR_BYTES + 256 * 1024;
  t.ok(after.peakBytes > 0, `sluice held ring stores (peak ${after.peakBytes} bytes, ${sampled} seen while running)`);
  t.ok(after.peakBytes <= bound, `the peak, ${after.peakBytes} bytes, stays within the budget per queue plus the floor per flow (${bound}); without the budget it is about ${FLOWS} MiB`);
  t.ok(pressed && after.pressureEvents > 0, `the budget was reached and counted (${after.pressureEvents} pressure events)`);
  t.equal(after.usedBytes, 0, 'every store is back once the downloads ended');

  const metrics = await apiGet(gateway, '/metrics');
  t.match(metrics, /^sluice_tcp_buffer_limit_bytes 1048576$/m, 'the metrics show the limit');
  t.match(metrics, /^sluice_tcp_buffer_peak_bytes [1-9]\d*$/m, 'and the peak');
  t.match(metrics, /^sluice_tcp_buffer_pressure_total [1-9]\d*$/m, 'and the pressure events');

  const t0 = Date.now();
  const exit = await engine.stop(10_000);
  t.equal(exit.code, 0, `SIGTERM ends sluice cleanly (in ${Date.now() - t0} ms)`);
});
