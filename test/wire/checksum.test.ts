import t from 'tap';
import {
  fold,
  internetChecksum,
  pseudoHeaderSumV4,
  pseudoHeaderSumV6,
  sum16,
  updateChecksum16,
  updateChecksum32,
} from '../../src/wire/checksum.js';
import { hex, IPV4_UDP_HEADER } from './fixtures.js';

function naive(buf: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += (buf[off + i]! << 8) | (i + 1 < len ? buf[off + i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

t.test('RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2', async (t) => {
  const b = hex('0001 f203 f4f5 f6f7');
  t.equal(fold(sum16(b, 0, b.length)), 0xddf2);
  t.equal(internetChecksum(b, 0, b.length), 0x220d);
});

t.test('a known IPv4 header verifies to zero and recomputes to its checksum', async (t) => {
  t.equal(internetChecksum(IPV4_UDP_HEADER, 0, 20), 0);
  const copy = IPV4_UDP_HEADER.slice();
  copy[10] = 0;
  copy[11] = 0;
  t.equal(internetChecksum(copy, 0, 20), 0xb861);
});

t.test('matches a naive implementation on random data, odd lengths and offsets', async (t) => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  const buf = new Uint8Array(70000);
  for (let i = 0; i < buf.length; i++) buf[i] = rnd();
  for (const [off, len] of [[0, 0], [0, 1], [1, 3], [3, 17], [5, 1499], [0, 65535], [2, 65535], [11, 40]] as const) {
    t.equal(internetChecksum(buf, off, len), naive(buf, off, len), `off ${off} len ${len}`);
  }
  const ones = new Uint8Array(65536).fill(0xff);
  t.equal(internetChecksum(ones, 0, ones.length), naive(ones, 0, ones.length), 'all-ones 64 KiB does not overflow');
});

t.test('RFC 1624 incremental update equals full recomputation', async (t) => {
  let seed = 99;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) & 0xffff;
  for (let round = 0; round < 2000; round++) {
    const b = new Uint8Array(40);
    for (let i = 0; i < b.length; i++) b[i] = rnd() & 0xff;
    b[10] = 0;
    b[11] = 0;
    const before = internetChecksum(b, 0, 40);
    b[10] = before >>> 8;
    b[11] = before & 0xff;
    // rewrite a 16-bit word (a port) and a 32-bit word (an address)
    const oldWord = (b[20]! << 8) | b[21]!;
    const newWord = round === 0 ? 0 : rnd();
    b[20] = newWord >>> 8;
    b[21] = newWord & 0xff;
    let c = updateChecksum16(before, oldWord, newWord);
    const oldAddr = ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
    const newAddr = ((rnd() << 16) | rnd()) >>> 0;
    b[12] = newAddr >>> 24;
    b[13] = (newAddr >>> 16) & 0xff;
    b[14] = (newAddr >>> 8) & 0xff;
    b[15] = newAddr & 0xff;
    c = updateChecksum32(c, oldAddr, newAddr);
    b[10] = c >>> 8;
    b[11] = c & 0xff;
    if (internetChecksum(b, 0, 40) !== 0) {
      t.fail(`round ${round}: incremental checksum does not verify`);
      return;
    }
  }
  t.pass('2000 random rewrites verify');
});

t.test('pseudo-header sums cover addresses, protocol and length', async (t) => {
  const v4 = hex('c0000202 cb007102');
  t.equal(pseudoHeaderSumV4(v4, 0, 4, 6, 40), 0xc000 + 0x0202 + 0xcb00 + 0x7102 + 6 + 40);
  const v6 = new Uint8Array(32);
  v6[15] = 1;
  v6[31] = 2;
  t.equal(pseudoHeaderSumV6(v6, 0, 16, 58, 0x10008), 1 + 2 + 58 + 1 + 8);
});
