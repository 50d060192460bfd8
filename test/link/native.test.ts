/** The native addon's contract: usage errors, errno errors with causes, TUN lifecycle, socket options. */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../../src/link/native.js';
import { Lab, requireRoot } from '../harness/netns.js';

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/native-probe.js');
const native = loadNative();

function thrown(fn: () => unknown): NodeJS.ErrnoException {
  try {
    fn();
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  throw new Error('expected a throw');
}

t.test('bad arguments throw a TypeError with a usage string', async (t) => {
  const cases: [string, () => unknown][] = [
    ['tunOpen', () => native.tunOpen(42 as unknown as string)],
    ['tunOpen name too long', () => native.tunOpen('x'.repeat(40))],
    ['tunOpen queues', () => native.tunOpen('a', { queues: 0 })],
    ['tunOpen offload without vnet', () => native.tunOpen('a', { offload: true })],
    ['linkSetMtu', () => native.linkSetMtu('lo', 20)],
    ['readerStart small buffer', () => native.readerStart(0, new ArrayBuffer(100), () => {})],
    ['writeBatch', () => native.writeBatch(0, 'x' as unknown as Uint8Array, 1)],
    ['setMark', () => native.setMark(-1 as unknown as number, -5)],
    ['createSocket family', () => native.createSocket({ family: 5 as 4 })],
  ];
  for (const [name, fn] of cases) {
    const err = thrown(fn);
    t.equal(err.code, 'SLUICE_NATIVE_USAGE', name);
    t.ok(err instanceof TypeError, `${name}: TypeError`);
  }
});

t.test('system call failures name the call, the errno and the likely cause', async (t) => {
  const err = thrown(() => native.linkSetMtu('nosuchif0', 1500));
  t.equal(err.code, 'ENODEV');
  t.equal(err.message, 'SIOCSIFMTU: ENODEV (no such interface)');
  t.equal(typeof err.errno, 'number');
  const ebadf = thrown(() => native.setMark(987654, 1));
  t.equal(ebadf.code, 'EBADF');
  t.match(ebadf.message, /^setsockopt SO_MARK: EBADF \(not an open fd\)$/);
  t.equal(native.linkIndex('nosuchif0'), 0);
  t.ok(native.linkIndex('lo') > 0);
});

t.test('TUN lifecycle in a namespace: MTU, up, flag mismatch, close inside a batch, multi-queue, offloads', async (t) => {
  if (!requireRoot(t)) return;
  const lab = await Lab.create(t, 'native');
  const ns = await lab.netns('host');
  const res = await ns.exec([process.execPath, fixture, 'tun'], { allowFail: true, timeoutMs: 30_000 });
  const r = JSON.parse(res.stdout) as Record<string, any>;
  t.notOk(r.fatal, `no fatal error (${r.fatal ?? ''} ${res.stderr})`);
  t.equal(r.mtu, '1400');
  t.equal(r.up, true);
  t.match(r.attachMismatch?.message, /^TUNSETIFF: E[A-Z]+ \(.+\)$/, `mismatch: ${r.attachMismatch?.message}`);
  t.ok(r.stoppedInside, 'readerStop inside onBatch with packets pending did not crash');
  t.equal(r.batchesBeforeClose, 2, 'no batch delivered after the stop');
  t.equal(r.multiQueueFds, 3);
  t.ok((r.offloads & 7) === 7, 'offloads accepted');
  t.ok(r.closeTwice, 'close is idempotent');
});

t.test('socket options: SO_MARK on the wire, IP_TRANSPARENT bind, SO_ORIGINAL_DST, errors', async (t) => {
  if (!requireRoot(t)) return;
  const lab = await Lab.create(t, 'sockopt');
  const ns = await lab.netns('host');
  await ns.sh('ip link set lo up');
  const res = await ns.exec([process.execPath, fixture, 'sockets'], { allowFail: true, timeoutMs: 30_000 });
  const r = JSON.parse(res.stdout) as Record<string, any>;
  t.notOk(r.fatal, `no fatal error (${r.fatal ?? ''} ${res.stderr})`);
  t.equal(r.markedReply, 'hi', 'a marked socket adopted by net.Socket connects and reads');
  t.ok(r.markedPackets >= 3, `the nftables mark counter saw ${r.markedPackets} packets`);
  t.equal(r.plainNonLocal?.code, 'EADDRNOTAVAIL', 'without IP_TRANSPARENT a non-local bind fails');
  t.equal(r.transparentListening, true, 'with IP_TRANSPARENT it listens');
  t.same(r.originalDst, { address: '127.0.0.1', port: 7777, family: 4 }, 'the pre-redirect destination');
  t.equal(r.noConntrack?.code, 'ENOENT');
  t.match(r.noConntrack?.message, /not redirected/);
  t.equal(r.bindToMissing?.code, 'ENODEV');
});
