import t from 'tap';
import { FragmentReassembler } from '../../src/ip/reassembly.js';

const HDR = new Uint8Array([0x45, 0, 0, 0]);

function payload(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

t.test('in-order and out-of-order fragments reassemble to the original payload', async (t) => {
  const data = payload(3000);
  for (const order of [
    [0, 1, 2],
    [2, 1, 0],
    [1, 2, 0],
  ]) {
    const r = new FragmentReassembler();
    const pieces = [data.subarray(0, 1232), data.subarray(1232, 2464), data.subarray(2464)];
    const offsets = [0, 1232, 2464];
    let out = null;
    for (const i of order) {
      const res = r.push(0, 'k', offsets[i]!, i !== 2, pieces[i]!, i === 0 ? HDR : null);
      if (res !== null) out = res;
    }
    t.ok(out, `order ${order.join(',')} completes`);
    t.same(Buffer.from(out!.payload), Buffer.from(data));
    t.same(Array.from(out!.firstHeader), Array.from(HDR));
    t.equal(r.pending, 0);
    t.equal(r.bytes, 0, 'nothing held after completion');
  }
});

t.test('an exact duplicate is ignored, an overlap discards the datagram (RFC 5722)', async (t) => {
  const r = new FragmentReassembler();
  const d = payload(64);
  t.equal(r.push(0, 'k', 0, true, d.subarray(0, 16), HDR), null);
  t.equal(r.push(0, 'k', 0, true, d.subarray(0, 16), HDR), null);
  t.equal(r.stats.duplicates, 1);
  t.equal(r.push(0, 'k', 8, true, d.subarray(8, 24), null), null, 'overlapping fragment');
  t.equal(r.stats.overlapDrops, 1);
  t.equal(r.pending, 0, 'the datagram was discarded');
  // The remaining fragments alone can no longer complete it.
  t.equal(r.push(0, 'k', 16, false, d.subarray(16, 64), null), null);
});

t.test('an overlap with the next piece is caught too', async (t) => {
  const r = new FragmentReassembler();
  const d = payload(64);
  r.push(0, 'k', 16, true, d.subarray(16, 32), null);
  t.equal(r.push(0, 'k', 8, true, d.subarray(8, 24), null), null);
  t.equal(r.stats.overlapDrops, 1);
});

t.test('non-last fragments must be multiples of 8 bytes', async (t) => {
  const r = new FragmentReassembler();
  t.equal(r.push(0, 'k', 0, true, payload(13), HDR), null);
  t.equal(r.stats.misalignedDrops, 1);
  t.equal(r.pending, 0);
});

t.test('conflicting ends and data past the end discard the datagram', async (t) => {
  const r = new FragmentReassembler();
  r.push(0, 'k', 0, true, payload(16), HDR);
  r.push(0, 'k', 32, false, payload(8), null);
  t.equal(r.push(0, 'k', 40, true, payload(8), null), null, 'data beyond the last fragment');
  t.equal(r.stats.overlapDrops, 1);
  t.equal(r.pending, 0);
});

t.test('datagrams larger than 65535 bytes are refused', async (t) => {
  const r = new FragmentReassembler();
  t.equal(r.push(0, 'k', 65528, false, payload(16), null), null);
  t.equal(r.stats.oversizeDrops, 1);
});

t.test('incomplete datagrams time out and free their memory', async (t) => {
  const r = new FragmentReassembler({ maxDatagrams: 8, maxBytes: 1 << 20, timeoutMs: 30_000 });
  r.push(1000, 'a', 0, true, payload(16), HDR);
  r.push(2000, 'b', 0, true, payload(16), HDR);
  t.equal(r.pollAt(), 31_000);
  t.equal(r.expire(30_999), 0);
  t.equal(r.expire(31_000), 1);
  t.equal(r.pending, 1);
  t.equal(r.bytes, 16);
  t.equal(r.pollAt(), 32_000);
  t.equal(r.expire(40_000), 1);
  t.equal(r.stats.timeouts, 2);
  t.equal(r.bytes, 0);
  t.equal(r.pollAt(), Infinity);
});

t.test('memory and datagram caps are enforced', async (t) => {
  const r = new FragmentReassembler({ maxDatagrams: 2, maxBytes: 64, timeoutMs: 30_000 });
  r.push(0, 'a', 0, true, payload(16), HDR);
  r.push(0, 'b', 0, true, payload(16), HDR);
  r.push(0, 'c', 0, true, payload(16), HDR);
  t.equal(r.pending, 2, 'the oldest datagram was evicted for the third');
  t.equal(r.stats.budgetDrops, 1);
  t.equal(r.push(0, 'c', 16, true, payload(40), null), null);
  t.equal(r.stats.budgetDrops, 2, 'exceeding the byte budget drops that datagram');
  t.ok(r.bytes <= 64);
});
