/**
 * A TUN read error reaches the receiver as a LinkError whose code is
 * stable (SLUICE_TUN_READ) and which names the errno, not only its number:
 * the interface is deleted under a running reader, the kernel flags the
 * descriptor (POLLERR), which libuv reports as EBADF.
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, requireRoot, waitForJsonLine } from '../harness/netns.js';
import { errnoName } from '../../src/link/errno.js';

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/tun-read-error.js');

t.test('errno numbers are named, Linux-only ones included', async (t) => {
  t.equal(errnoName(11), 'EAGAIN');
  t.equal(errnoName(77), 'EBADFD', 'missing from libuv, named anyway');
  t.equal(errnoName(5), 'EIO');
  t.equal(errnoName(100_000), 'errno 100000', 'an unknown number stays a number');
});

t.test('deleting the interface under the reader: SLUICE_TUN_READ with errno EBADF', async (t) => {
  if (!requireRoot(t)) return;
  const lab = await Lab.create(t, 'tunerr');
  const ns = await lab.netns('host');
  const child = ns.spawn([process.execPath, fixture, 'sl0']);
  await waitForJsonLine(child, (m: { event?: string }) => m.event === 'ready');
  const error = waitForJsonLine<{ event: string; code: string; errno: string; message: string; sluice: boolean }>(child, (m) => m.event === 'error', 20_000);
  await ns.exec(['ip', 'link', 'del', 'sl0']);
  const e = await error;
  t.equal(e.code, 'SLUICE_TUN_READ', 'the stable code');
  t.equal(e.errno, 'EBADF', 'the errno by name');
  t.match(e.message, /read failed: EBADF \(errno 9; the interface was deleted/, `the message names it and the likely cause: ${e.message}`);
  t.ok(e.sluice, 'a SluiceError');
});
