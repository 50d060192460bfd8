/**
 * The TCP request/response mode (src/tcp/output.ts `interactive`) through
 * a real `sluice run`: a kept-alive client writes each request in two
 * halves with Nagle on (no TCP_NODELAY), so its kernel holds the second
 * half until sluice ACKs the first, and the server answers only the whole
 * request. Sluice holds a request's ACK for its answer only
 * interactiveAckMs (src/tcp/config.ts, 5 ms), not the 40 ms of a delayed
 * ACK (Linux's pingpong mode waits its delayed-ACK time, and such a client
 * then waits that long for every request), and after INTERACTIVE_MISSES such waits
 * the connection ACKs small pushes at once again: the client waits on
 * two requests, not on every one. With the whole request in one write the
 * answer carries the ACK (test/tcp/window.test.ts).
 *
 * Needs root, /dev/net/tun.
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireRoot, waitForJsonLine } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { TUN, childEnv, createLab, startEngine, steer, tempDir } from '../fixtures/engine/lab.js';
import { defaultTcpConfig } from '../../src/tcp/config.js';
import { INTERACTIVE_MISSES } from '../../src/tcp/output.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const holder = path.resolve(here, '../fixtures/conn-holder.js');
const ROUNDS = 40;

t.test('a client that splits its requests with Nagle on waits at most interactiveAckMs per request, not a delayed ACK', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const dir = tempDir(t, 'reqack');
  const lab = await createLab(t, 'reqackab');
  const { client, gateway, server } = await threeNamespaces(lab);
  const srv = server.spawn([process.execPath, holder, 'answer', '9100', '128'], { env: childEnv });
  t.teardown(() => {
    srv.kill('SIGKILL');
  });
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const engine = await startEngine(t, gateway, dir, `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false }
`);
  t.teardown(() => engine.stop(10_000));
  await steer(gateway, TUN);
  const cli = client.spawn([process.execPath, holder, 'split', SERVER_V4, '9100', String(ROUNDS)], { env: childEnv });
  const r = await waitForJsonLine<{ event: string; p50: number; max: number; samples: number[] }>(cli, (m) => m.event === 'split', 30_000);
  const { interactiveAckMs, delayedAckMs } = defaultTcpConfig();
  t.comment(`round trips (µs): ${r.samples.join(' ')}`);
  t.equal(r.samples.length, ROUNDS, `${ROUNDS} requests answered`);
  // At most INTERACTIVE_MISSES rounds wait for the request's ACK (interactiveAckMs), none for a delayed ACK.
  const slow = r.samples.filter((us) => us > interactiveAckMs * 1000 * 0.6).length;
  t.ok(slow <= INTERACTIVE_MISSES + 1, `${slow} of ${ROUNDS} requests waited about interactiveAckMs (${interactiveAckMs} ms): at most the misses that end the mode, and the first`);
  t.ok(r.p50 < interactiveAckMs * 1000 * 0.6, `median ${r.p50} µs: the rest wait for no timer`);
  t.ok(r.max < (delayedAckMs * 1000) / 2, `the slowest ${r.max} µs, under half a delayed ACK (${delayedAckMs} ms)`);
});
