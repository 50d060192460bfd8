/**
 * 50,000 QUIC Initials whose plaintext frames were mutated and then sealed
 * again: wire mutations almost never survive the AEAD, so this is what
 * fuzzes the CRYPTO-frame walker, the stream reassembly and the ClientHello
 * walker behind it. Nothing throws; every verdict is well-formed.
 */
import t from 'tap';
import { QuicInitialSniffer, sniffQuicInitial } from '../../src/engine/sniff/quic-initial.js';
import type { SniffResult } from '../../src/engine/sniff/result.js';
import { Rng, concat, hex } from './fixtures.js';
import { malformed, mutate } from './fuzz-helpers.js';
import { RFC9001_CRYPTO_FRAME, cryptoFrame, sealInitial } from './quic-builder.js';

const N = 50_000;

function check(t: Test, what: string, input: Uint8Array, fn: () => SniffResult, counts: Record<string, number>): boolean {
  let r: SniffResult;
  try {
    r = fn();
  } catch (e) {
    t.fail(`${what} threw: ${String(e)} frames=${Buffer.from(input).toString('hex')}`);
    return false;
  }
  const bad = malformed(r);
  if (bad !== null) {
    t.fail(`${what}: ${bad} frames=${Buffer.from(input).toString('hex')}`);
    return false;
  }
  const key = `${what}:${r.kind}`;
  counts[key] = (counts[key] ?? 0) + 1;
  return true;
}

import type { Test } from 'tap';

t.test('QUIC Initials with mutated plaintext, sealed again', async (t) => {
  const helloFrames = concat(RFC9001_CRYPTO_FRAME, hex('01'), cryptoFrame(300, new Uint8Array(20)));
  const counts: Record<string, number> = {};
  const rng = new Rng(0xbadc0de);
  const dcid = hex('0102030405060708');
  for (let i = 0; i < N; i++) {
    const frames = mutate(helloFrames, RFC9001_CRYPTO_FRAME, rng);
    const d = sealInitial({ dcid, frames, pn: rng.int(4), pnLen: 1 + rng.int(4), datagramSize: i % 4 === 0 ? 1200 : 0 });
    const ok =
      check(t, 'quic', frames, () => sniffQuicInitial(d, { minDatagramSize: 0 }), counts) &&
      (i % 5 !== 0 || check(t, 'pair', frames, () => {
        const s = new QuicInitialSniffer({ maxCryptoBytes: 256 + rng.int(2000), maxDatagrams: 2, minDatagramSize: 0 });
        s.push(d);
        return s.push(d);
      }, counts));
    if (!ok) return;
  }
  t.pass(`${N} sealed mutations`);
  t.ok((counts['quic:found'] ?? 0) > 0, `found ${counts['quic:found']}`);
  const named = counts['quic:found'] ?? 0;
  t.ok(named > N / 10, 'many mutations still decrypt and parse');
});
