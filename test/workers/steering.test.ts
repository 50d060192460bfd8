/**
 * The TUN queue steering program (bpf/steering.c, src/workers/steering.ts)
 * with tun.queues 2, in the client / gateway / server topology:
 *   - one client UDP socket sending to many destinations (ports and
 *     addresses, IPv4 and IPv6) is carried by one worker: every one of its
 *     flow lines names the same queue (the kernel's 4-tuple hash would
 *     spread them, which broke udp.nat's endpoint-independent mapping);
 *   - many client sockets (source ports) still use both queues;
 *   - the start-up line names the program.
 * And without a kernel or object for it: one warn line, the flow hash, no
 * start-up failure (attachSteering with a failing addon).
 *
 * Needs root, /dev/net/tun.
 */
import t from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { TUN, childEnv, createLab, startEngine, steer, tempDir } from '../fixtures/engine/lab.js';
import { attachSteering, STEERING_FALLBACK, STEERING_PROGRAM } from '../../src/workers/steering.js';
import type { Logger } from '../../src/engine/logger.js';

delete (childEnv as NodeJS.ProcessEnv).SLUICE_TEST_TUN_QUEUES;

const CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN}, queues: 2 }
outbounds:
  - { name: direct, type: direct }
final: direct
`;

/** Sends one datagram from each of `sockets` sockets (bound to `firstPort` + i) to every destination. */
const SENDER = `
const dgram = require('node:dgram');
const [family, firstPort, sockets, ...dsts] = process.argv.slice(1);
let left = Number(sockets);
for (let i = 0; i < Number(sockets); i++) {
  const s = dgram.createSocket(family === '6' ? 'udp6' : 'udp4');
  s.bind(Number(firstPort) + i, () => {
    let n = 0;
    for (const d of dsts) {
      const at = d.lastIndexOf(':');
      s.send('steer', Number(d.slice(at + 1)), d.slice(0, at), () => { if (++n === dsts.length) { s.close(); if (--left === 0) process.exit(0); } });
    }
  });
}
`;

async function send(client: Netns, family: 4 | 6, firstPort: number, sockets: number, dsts: string[]): Promise<void> {
  const r = await client.exec([process.execPath, '-e', SENDER, String(family), String(firstPort), String(sockets), ...dsts], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`sender failed: ${r.stderr}`);
}

const portOf = (ep: string): number => Number(ep.slice(ep.lastIndexOf(':') + 1));

t.test('tun.queues 2: one client socket on one queue whatever its destinations; many sockets on both', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const dir = tempDir(t, 'steering');
  const lab = await createLab(t, 'stqueues');
  const { client, gateway } = await threeNamespaces(lab);
  const engine = await startEngine(t, gateway, dir, CONFIG);
  await steer(gateway, TUN);
  const start = engine.lines.find((l) => l.msg === 'worker threads serving the TUN queues');
  t.equal(start?.queues, 2, 'two worker threads');
  t.equal(start?.steering, STEERING_PROGRAM, 'the start-up line names the steering program');
  t.notOk(engine.lines.some((l) => l.msg?.startsWith('TUN steering program not attached') === true), 'no fallback warning');

  // One socket per family, 24 destinations each: 8 ports on each of 3 addresses.
  const v4 = [SERVER_V4, '203.0.113.3', '203.0.113.4'].flatMap((a) => Array.from({ length: 8 }, (_, i) => `${a}:${7000 + i}`));
  const v6 = [SERVER_V6, '2001:db8:5::3', '2001:db8:5::4'].flatMap((a) => Array.from({ length: 8 }, (_, i) => `${a}:${7000 + i}`));
  await send(client, 4, 41000, 1, v4);
  await send(client, 6, 41000, 1, v6);
  // 32 sockets, one destination each.
  await send(client, 4, 42000, 32, [`${SERVER_V4}:7100`]);
  await send(client, 6, 42000, 32, [`${SERVER_V6}:7100`]);
  await new Promise((r) => setTimeout(r, 500));
  const exit = await engine.stop();
  t.equal(exit.code, 0, 'SIGTERM: exit 0 (every worker logs its flows)');

  const udp = engine.flows().filter((f) => f.network === 'udp');
  for (const [family, want] of [['IPv4', v4.length], ['IPv6', v6.length]] as const) {
    const isFamily = (f: { src: string }): boolean => (family === 'IPv6') === f.src.includes('2001:db8');
    const one = udp.filter((f) => portOf(f.src) === 41000 && isFamily(f));
    t.equal(one.length, want, `${family}: a flow line for each of the socket's ${want} destinations`);
    const queues = new Set(one.map((f) => f.queue));
    t.equal(queues.size, 1, `${family}: one socket, ${want} destinations, one queue (${[...queues].join(', ')})`);
    const many = udp.filter((f) => portOf(f.src) >= 42000 && portOf(f.src) < 42032 && isFamily(f));
    t.equal(many.length, 32, `${family}: a flow line for each of 32 sockets`);
    const spread = new Set(many.map((f) => f.queue));
    t.same([...spread].sort(), [0, 1], `${family}: 32 source ports use both queues (${many.filter((f) => f.queue === 0).length} on queue 0)`);
  }
});

t.test('no steering program (no eBPF, old kernel, missing object): one warn line, the flow hash, start-up goes on', async (t) => {
  const warns: { obj: Record<string, unknown>; msg: string }[] = [];
  const log = { warn: (obj: Record<string, unknown>, msg: string) => warns.push({ obj, msg }) } as unknown as Logger;
  const closed: number[] = [];
  const failing = {
    bpfLoad: () => ({ prog: 7, maps: {} }),
    tunSetSteering: () => {
      throw Object.assign(new Error('TUNSETSTEERINGEBPF: EINVAL (this kernel has no TUN steering programs)'), { code: 'EINVAL' });
    },
    closeFd: (fd: number) => closed.push(fd),
  };
  const r = attachSteering(failing, [3, 4], log);
  t.equal(r.steering, STEERING_FALLBACK, 'the kernel flow hash picks the queues');
  t.match(r.error, /EINVAL/, 'the errno name is kept');
  t.equal(warns.length, 1, 'one warn line');
  t.match(warns[0]!.msg, /endpoint-independent mapping holds only per queue/, 'saying what it costs');
  t.match(warns[0]!.obj.err, /TUNSETSTEERINGEBPF: EINVAL/, 'with the error');
  t.same(closed, [7], 'the loaded program fd is closed');

  const noBpf = { ...failing, bpfLoad: () => { throw new Error('bpf_object__load: EPERM (needs CAP_BPF and CAP_NET_ADMIN, or root)'); } };
  t.equal(attachSteering(noBpf, [3, 4], log).steering, STEERING_FALLBACK, 'a refused load: the flow hash too');
  t.equal(attachSteering(failing, [3, 4], log, '/nonexistent/steering.o').steering, STEERING_FALLBACK, 'a missing object: the flow hash too');
  t.match(warns[2]!.obj.err, /steering object is missing/, 'naming the missing object');
  t.equal(warns.length, 3, 'one line per failed start');
  t.equal(attachSteering(failing, [3], log).steering, 'single queue', 'one queue: nothing to steer, nothing attached');
  t.equal(warns.length, 3, 'and nothing warned');
});
