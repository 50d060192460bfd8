/** SYN cookies (RFC 4987 3.6): the keyed hash, encoding, validation, secret rotation; explicit clock, seeded secrets. */
import t from 'tap';
import { COOKIE_MSS_V4, COOKIE_MSS_V6, SynCookies, cookieSackPermitted, cookieTimestamp, cookieWindowScale, halfSipHash24 } from '../../src/tcp/syn-cookie.js';

/** A deterministic "random" source: a counter (tests only). */
function seeded(start = 1): (out: Uint32Array) => void {
  let n = start;
  return (out) => {
    for (let i = 0; i < out.length; i++) out[i] = Math.imul(n++, 0x9e3779b1) >>> 0;
  };
}

const SRC = new Uint8Array(16);
const DST = new Uint8Array(16);
SRC.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 2]);
DST.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 2]);
const PERIOD = 30_000;

t.test('HalfSipHash-2-4 matches the reference vectors (key 00..07, input 00..n-1)', async (t) => {
  const k0 = 0x03020100;
  const k1 = 0x07060504;
  t.equal(halfSipHash24(k0, k1, new Uint32Array(0), 0), 0x5b9f35a9, 'empty input: a9 35 9f 5b');
  t.equal(halfSipHash24(k0, k1, Uint32Array.of(0x03020100), 1), 0x89466e2a, '4 bytes: 2a 6e 46 89');
  t.equal(halfSipHash24(k0, k1, Uint32Array.of(0x03020100, 0x07060504), 2), 0x8f84b8d0, '8 bytes: d0 b8 84 8f');
});

t.test('a cookie validates for its own tuple and client ISN and yields the MSS class', async (t) => {
  const c = new SynCookies(1000, { periodMs: PERIOD, random: seeded() });
  for (const [family, mss, want] of [
    [4, 1460, 1460],
    [4, 1400, 1300],
    [4, 536, 536],
    [4, 100, 536],
    [6, 1440, 1440],
    [6, 9000, 8940],
    [6, 1300, 1220],
  ] as const) {
    const isn = c.isn(1000, family, SRC, DST, 40000, 80, 123456, mss);
    t.equal(c.check(1500, family, SRC, DST, 40000, 80, 123456, isn), want, `IPv${family} MSS ${mss} -> ${want}`);
  }
  t.ok(COOKIE_MSS_V4.length === 4 && COOKIE_MSS_V6.length === 4, 'two bits of MSS index');
});

t.test('a cookie fails for another tuple, another client ISN, or any flipped bit', async (t) => {
  const c = new SynCookies(0, { periodMs: PERIOD, random: seeded(7) });
  const isn = c.isn(0, 4, SRC, DST, 40000, 80, 99, 1460);
  t.equal(c.check(10, 4, SRC, DST, 40001, 80, 99, isn), 0, 'other source port');
  t.equal(c.check(10, 4, SRC, DST, 40000, 81, 99, isn), 0, 'other destination port');
  t.equal(c.check(10, 4, SRC, DST, 40000, 80, 100, isn), 0, 'other client ISN');
  const other = SRC.slice();
  other[15] = 3;
  t.equal(c.check(10, 4, other, DST, 40000, 80, 99, isn), 0, 'other source address');
  let accepted = 0;
  for (let b = 0; b < 32; b++) if (c.check(10, 4, SRC, DST, 40000, 80, 99, (isn ^ (1 << b)) >>> 0) !== 0) accepted++;
  t.equal(accepted, 0, 'no single-bit change of the cookie passes');
  t.equal(c.validated, 0);
  t.ok(c.rejected >= 36);
});

t.test('blind guesses essentially never pass (2^-27 per guess)', async (t) => {
  const c = new SynCookies(0, { periodMs: PERIOD, random: seeded(3) });
  let x = 0x12345678;
  let passed = 0;
  for (let i = 0; i < 200_000; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    if (c.check(5, 4, SRC, DST, 40000, 80, 1, x >>> 0) !== 0) passed++;
  }
  t.ok(passed <= 1, `random cookies accepted: ${passed} of 200000`);
});

t.test('secret rotation: valid in its period and the next, expired after; a clock jump forgets both secrets', async (t) => {
  const c = new SynCookies(0, { periodMs: PERIOD, random: seeded(11) });
  const isn = c.isn(PERIOD - 1, 4, SRC, DST, 40000, 80, 5, 1460);
  t.equal(c.check(PERIOD - 1, 4, SRC, DST, 40000, 80, 5, isn), 1460, 'same period');
  t.equal(c.check(2 * PERIOD - 1, 4, SRC, DST, 40000, 80, 5, isn), 1460, 'next period (previous secret)');
  t.equal(c.check(2 * PERIOD, 4, SRC, DST, 40000, 80, 5, isn), 0, 'two periods later: expired');
  const c2 = new SynCookies(0, { periodMs: PERIOD, random: seeded(11) });
  const isn2 = c2.isn(0, 4, SRC, DST, 40000, 80, 5, 1460);
  t.equal(c2.check(8 * PERIOD, 4, SRC, DST, 40000, 80, 5, isn2), 0, 'counter wrapped (t mod 8 equal) but the secret rotated: rejected');
  const c3 = new SynCookies(0, { periodMs: PERIOD, random: seeded(11) });
  const isn3 = c3.isn(0, 4, SRC, DST, 40000, 80, 5, 1460);
  c3.check(5 * PERIOD, 4, SRC, DST, 40000, 80, 5, 0);
  t.equal(c3.check(PERIOD, 4, SRC, DST, 40000, 80, 5, isn3), 0, 'after a jump (and back) the old secret is gone');
});

t.test('the timestamp carries window scale and SACK, never above the clock', async (t) => {
  for (const clock of [0x100, 0x1f, 0x12345670, 0xffffffe0, 0x12345600]) {
    for (const [ws, sack] of [
      [7, true],
      [0, false],
      [14, true],
      [-1, false],
      [-1, true],
    ] as const) {
      const ts = cookieTimestamp(clock, ws, sack);
      t.ok(((ts - clock) | 0) <= 0 && ((clock - ts) | 0) < 64, `clock ${clock.toString(16)} ws ${ws}: ts ${ts.toString(16)} at or below the clock, within 64`);
      t.equal(cookieWindowScale(ts), ws);
      t.equal(cookieSackPermitted(ts), sack);
    }
  }
});
