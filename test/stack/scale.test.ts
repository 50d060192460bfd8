/**
 * Scale and flow control through a real TUN with the kernel as the peer:
 * 10,000 concurrent idle connections (and the heap they cost), and slow
 * readers on either side forcing a zero window that must recover.
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, requireRoot, waitForJsonLine, type TestLike } from '../harness/netns.js';
import { threeNamespaces, steerIntoTun, SERVER_V4 } from '../harness/topology.js';
import { blobSha256 } from '../fixtures/blob.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const relay = path.resolve(here, '../fixtures/stack-relay.js');
const holder = path.resolve(here, '../fixtures/conn-holder.js');
const blobServer = path.resolve(here, '../fixtures/blob-server.js');

interface RelayStats {
  tcpFlowsActive: number;
  tcpZeroWindowsSent: number;
  tcpWindowProbes: number;
  memory: { heapUsed: number; external: number; arrayBuffers: number; rss: number };
}

/** Runs `argv` with a soft open-file limit raised to the hard one (10,000 sockets need more than the usual 1,024). */
function manyFiles(argv: string[]): string[] {
  return ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', ...argv];
}

async function relayIn(t: TestLike, tag: string, relayArgs: string[] = []) {
  const lab = await Lab.create(t, tag);
  const topo = await threeNamespaces(lab);
  const gw = topo.gateway.spawn(manyFiles([process.execPath, '--expose-gc', relay, '--name', 'sl0', ...relayArgs]));
  await waitForJsonLine(gw, (m: { event?: string }) => m.event === 'ready');
  await steerIntoTun(topo.gateway, 'sl0');
  const stats = async (): Promise<RelayStats> => {
    const p = waitForJsonLine<RelayStats & { event: string }>(gw, (m) => m.event === 'stats');
    gw.kill('SIGUSR2');
    return p;
  };
  /** Stats once every flow has closed: per-connection counters are added to the totals when a connection ends. */
  const statsWhenClosed = async (): Promise<RelayStats> => {
    for (let i = 0; ; i++) {
      const s = await stats();
      if (s.tcpFlowsActive === 0 || i >= 50) return s;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return { ...topo, gw, stats, statsWhenClosed };
}

t.test('10,000 concurrent idle connections through the stack, and the heap they cost', async (t) => {
  if (!requireRoot(t)) return;
  const { client, server, stats } = await relayIn(t, 'scale');
  const srv = server.spawn(manyFiles([process.execPath, holder, 'server', '9000']));
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const before = await stats();
  const cli = client.spawn(manyFiles([process.execPath, holder, 'client', SERVER_V4, '9000', '10000']));
  const done = await waitForJsonLine<{ event: string; connected: number; failed: number; ms: number }>(cli, (m) => m.event === "connected", 180_000);
  t.equal(done.connected, 10_000, `all 10,000 connected (in ${done.ms} ms, ${done.failed} failed)`);
  // Let the handshakes' last ACKs land, then measure.
  await new Promise((r) => setTimeout(r, 1000));
  const after = await stats();
  t.ok(after.tcpFlowsActive >= 10_000, `the stack holds ${after.tcpFlowsActive} flows`);
  const heapMb = (after.memory.heapUsed - before.memory.heapUsed) / 2 ** 20;
  const totalMb = after.memory.heapUsed / 2 ** 20;
  t.comment(`heap ${totalMb.toFixed(1)} MB in all (+${heapMb.toFixed(1)} MB for 10,000 flows, relay sockets included); external ${(after.memory.external / 2 ** 20).toFixed(1)} MB; rss ${(after.memory.rss / 2 ** 20).toFixed(0)} MB`);
  t.ok(totalMb < 200, `under 200 MB of heap (${totalMb.toFixed(1)} MB)`);
  t.ok(after.memory.arrayBuffers / 2 ** 20 < 100, `idle flows hold no buffers (${(after.memory.arrayBuffers / 2 ** 20).toFixed(1)} MB of ArrayBuffers)`);
});

t.test('a slow reader behind the stack forces a zero window; the upload then completes intact', async (t) => {
  if (!requireRoot(t)) return;
  const { client, server, statsWhenClosed } = await relayIn(t, 'zwnd', ['--pause-ms', '3000']);
  const srv = server.spawn([process.execPath, blobServer, '8080']);
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const size = 8 * 1024 * 1024;
  const file = `/tmp/sluice-zwnd-${process.pid}.bin`;
  t.teardown(() => client.exec(['rm', '-f', file], { allowFail: true }).then(() => undefined));
  const sha = (await client.sh(`head -c ${size} /dev/urandom > ${file} && sha256sum ${file}`)).split(' ')[0];
  const started = Date.now();
  const up = JSON.parse(await client.sh(`curl -sS --max-time 60 -X POST -T ${file} http://${SERVER_V4}:8080/sink`, { timeoutMs: 70_000 })) as { bytes: number; sha256: string };
  t.ok(Date.now() - started >= 2500, 'the transfer waited for the reader');
  t.equal(up.sha256, sha, 'upload intact after the window reopened');
  const s = await statsWhenClosed();
  t.ok(s.tcpZeroWindowsSent > 0, `the stack advertised a zero window (${s.tcpZeroWindowsSent} segments)`);
});

/** GET /bytes/N over a raw socket, pausing 1.5 s after the first chunk; prints the body's SHA-256. */
const SLOW_GET = `
const net = require('net'); const crypto = require('crypto');
const [host, size] = process.argv.slice(1);
const hash = crypto.createHash('sha256'); let head = Buffer.alloc(0); let inBody = false; let paused = false;
const s = net.connect(8080, host, () => s.write('GET /bytes/' + size + ' HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'));
s.on('data', (d) => {
  if (!inBody) { head = Buffer.concat([head, d]); const i = head.indexOf('\\r\\n\\r\\n'); if (i < 0) return; inBody = true; d = head.subarray(i + 4); }
  hash.update(d);
  if (!paused) { paused = true; s.pause(); setTimeout(() => s.resume(), 1500); }
});
s.on('end', () => console.log(hash.digest('hex')));
`;

t.test('a slow reader on the client side: the stack probes the zero window and finishes the download', async (t) => {
  if (!requireRoot(t)) return;
  const { client, server, statsWhenClosed } = await relayIn(t, 'zprobe');
  const srv = server.spawn([process.execPath, blobServer, '8080']);
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const size = 4 * 1024 * 1024;
  // A client that stops reading for 1.5 s after the first bytes, with a small
  // receive buffer: the kernel closes its window for longer than the stack's
  // first persist interval (an RTO, at least 200 ms), so probes must go out.
  // (curl --limit-rate pauses too briefly to be sure of that.)
  await client.sh('sysctl -qw net.ipv4.tcp_rmem="4096 65536 262144"');
  const down = await client.exec([process.execPath, '-e', SLOW_GET, SERVER_V4, String(size)], { timeoutMs: 60_000, env: { ...process.env, NODE_OPTIONS: '' } });
  t.equal(down.stdout.trim(), blobSha256(size), 'download intact');
  const s = await statsWhenClosed();
  t.ok(s.tcpWindowProbes > 0, `the stack probed the closed window (${s.tcpWindowProbes} probes)`);
});
