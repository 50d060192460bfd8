import t from 'tap';
import type { Test } from 'tap';
import { QuicInitialSniffer, sniffQuicInitial, looksLikeQuicInitial } from '../../src/engine/sniff/quic-initial.js';
import { clientInitialSecret, deriveClientInitialKeys, headerProtectionMask, openPayload } from '../../src/engine/sniff/quic-keys.js';
import type { SniffResult } from '../../src/engine/sniff/result.js';
import { captureNodeClientHello } from './capture.js';
import { clientHelloMessage, concat, extension, hex } from './fixtures.js';
import {
  RFC9001_CLIENT_INITIAL,
  RFC9001_CRYPTO_FRAME,
  RFC9001_DCID,
  RFC9001_HEADER,
  V1,
  V2,
  clientKeys,
  cryptoFrame,
  sealInitial,
  varint,
} from './quic-builder.js';

function expectQuic(t: Test, r: SniffResult, name: string | null, alpn: string[], version: number, complete = true): void {
  if (r.kind !== 'found' || r.protocol !== 'quic') {
    t.fail(`expected quic, got ${JSON.stringify(r)}`);
    return;
  }
  t.equal(r.serverName, name, `serverName ${String(name)}`);
  t.same(r.alpn, alpn, 'alpn');
  t.equal(r.version, version, 'version');
  t.equal(r.complete, complete, 'complete');
}

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

t.test('RFC 9001 Appendix A.1: client Initial keys from DCID 8394c8f03e515708', async (t) => {
  t.equal(hexOf(clientInitialSecret(V1, RFC9001_DCID)), 'c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea');
  const k = deriveClientInitialKeys(V1, RFC9001_DCID);
  t.equal(hexOf(k.key), '1f369613dd76d5467730efcbe3b1a22d', 'key');
  t.equal(hexOf(k.iv), 'fa044b2f42a3fd3b46fb255c', 'iv');
  t.equal(hexOf(k.hp), '9f50449e04a0e810283a1e9933adedd2', 'hp');
  // A.2: sample d1b1c98dd7689fb8ec11d242b123dc9b -> mask 437b9aec36
  t.equal(hexOf(headerProtectionMask(k, hex('d1b1c98dd7689fb8ec11d242b123dc9b')).subarray(0, 5)), '437b9aec36');
});

t.test('RFC 9369 Appendix A.1: QUIC v2 client Initial keys', async (t) => {
  t.equal(hexOf(clientInitialSecret(V2, RFC9001_DCID)), '14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b');
  const k = deriveClientInitialKeys(V2, RFC9001_DCID);
  t.equal(hexOf(k.key), '8b1a0bc121284290a29e0971b5cd045d', 'key');
  t.equal(hexOf(k.iv), '91f73e2351d8fa91660e909f', 'iv');
  t.equal(hexOf(k.hp), '45b95e15235d6f45a6b19cbcb0294ba9', 'hp');
});

t.test('RFC 9001 Appendix A.2: the protected client Initial yields example.com / alpn', async (t) => {
  t.equal(RFC9001_CLIENT_INITIAL.length, 1200);
  t.equal(hexOf(RFC9001_CLIENT_INITIAL.subarray(0, 22)), 'c000000001088394c8f03e5157080000449e7b9aec34', 'protected header as printed in A.2');
  t.ok(looksLikeQuicInitial(RFC9001_CLIENT_INITIAL));
  expectQuic(t, sniffQuicInitial(RFC9001_CLIENT_INITIAL), 'example.com', ['alpn'], V1);
  // The caller's datagram is not modified (header protection is removed on a copy).
  t.equal(RFC9001_CLIENT_INITIAL[0], 0xc0);
  // Open by hand with src/ keys: the payload starts with the CRYPTO frame.
  const k = deriveClientInitialKeys(V1, RFC9001_DCID);
  const plain = openPayload(k, 2, RFC9001_HEADER, RFC9001_CLIENT_INITIAL.subarray(22));
  t.ok(plain !== null, 'opens');
  t.equal(hexOf(plain!.subarray(0, RFC9001_CRYPTO_FRAME.length)), hexOf(RFC9001_CRYPTO_FRAME));
  // The test builder reproduces the RFC packet byte for byte (so its other outputs are trustworthy).
  t.equal(hexOf(sealInitial({ frames: RFC9001_CRYPTO_FRAME, pn: 2, pnLen: 4 })), hexOf(RFC9001_CLIENT_INITIAL));
  t.same(clientKeys(V1, RFC9001_DCID).hp, k.hp);
});

/** A big real ClientHello (node:tls plus a padding extension) as a QUIC crypto stream. */
async function bigHello(): Promise<Uint8Array> {
  const rec = await captureNodeClientHello({ servername: 'quic.example.net', ALPNProtocols: ['h3'] });
  const msg = rec.subarray(5); // single record: strip its header
  t.equal(msg[0], 1);
  // Append a 1500-byte padding extension so the hello needs two datagrams.
  const bodyLen = (msg[1]! << 16) | (msg[2]! << 8) | msg[3]!;
  t.equal(bodyLen + 4, msg.length);
  const pad = extension(21, new Uint8Array(1500));
  const out = concat(msg, pad);
  const newLen = bodyLen + pad.length;
  out[1] = newLen >> 16;
  out[2] = (newLen >> 8) & 0xff;
  out[3] = newLen & 0xff;
  // extensions length sits right after compression methods: find it by walking the fixed fields
  let p = 4 + 2 + 32;
  p += 1 + out[p]!;
  p += 2 + ((out[p]! << 8) | out[p + 1]!);
  p += 1 + out[p]!;
  const extLen = ((out[p]! << 8) | out[p + 1]!) + pad.length;
  out[p] = extLen >> 8;
  out[p + 1] = extLen & 0xff;
  return out;
}

/** Chrome-style "chaos": CRYPTO frames out of order with PING/PADDING between. */
function chaos(hello: Uint8Array, cuts: number[], order: number[]): Uint8Array[] {
  const edges = [0, ...cuts, hello.length];
  const frames = order.map((i) => cryptoFrame(edges[i]!, hello.subarray(edges[i]!, edges[i + 1]!)));
  return frames.map((f, i) => (i % 2 === 0 ? concat(hex('01 00 00'), f) : concat(f, hex('01'))));
}

t.test('a ClientHello across two datagrams, CRYPTO frames out of order (v1 and v2)', async (t) => {
  const hello = await bigHello();
  t.ok(hello.length > 1300, `hello ${hello.length} bytes`);
  for (const version of [V1, V2]) {
    const dcid = hex('0011223344556677aabb');
    const f = chaos(hello, [300, 900, 1200], [2, 0, 3, 1]);
    const d1 = sealInitial({ version, dcid, scid: hex('c1c2'), pn: 0, pnLen: 1, frames: concat(f[0]!, f[1]!) });
    const d2 = sealInitial({ version, dcid, scid: hex('c1c2'), pn: 1, pnLen: 2, frames: concat(f[2]!, f[3]!) });
    t.ok(d1.length >= 1200 && d2.length >= 1200);
    const s = new QuicInitialSniffer();
    t.equal(s.push(d1).kind, 'need-more', 'first datagram: stream starts but is incomplete');
    expectQuic(t, s.push(d2), 'quic.example.net', ['h3'], version);
    t.equal(s.initialsOpened, 2);
    // array form, and the datagrams in the other order
    expectQuic(t, sniffQuicInitial([d1, d2]), 'quic.example.net', ['h3'], version);
    expectQuic(t, sniffQuicInitial([d2, d1]), 'quic.example.net', ['h3'], version);
    t.equal(sniffQuicInitial([d1]).kind, 'need-more');
  }
});

t.test('coalesced packets, tokens, overlapping and duplicate CRYPTO data', async (t) => {
  const hello = clientHelloMessage({ sni: 'co.example', alpn: ['h3'] });
  const dcid = hex('0102030405060708');
  const initial = sealInitial({ dcid, token: hex('aabbccdd'), frames: concat(cryptoFrame(0, hello.subarray(0, 80)), cryptoFrame(40, hello.subarray(40)), cryptoFrame(0, hello.subarray(0, 10))), datagramSize: 0 });
  // A following 0-RTT-typed long header packet (v1 type 1) with its own Length: skipped.
  const zeroRtt = concat(hex('d1 00000001 08'), dcid, hex('00'), varint(30), new Uint8Array(30));
  const datagram = concat(initial, zeroRtt, new Uint8Array(Math.max(0, 1200 - initial.length - zeroRtt.length)));
  expectQuic(t, sniffQuicInitial(datagram), 'co.example', ['h3'], V1);
  // Two Initials coalesced, halves of the stream.
  const a = sealInitial({ dcid, pn: 0, frames: cryptoFrame(0, hello.subarray(0, 50)), datagramSize: 0 });
  const b = sealInitial({ dcid, pn: 1, frames: cryptoFrame(50, hello.subarray(50)), datagramSize: 1200 - a.length });
  expectQuic(t, sniffQuicInitial(concat(a, b)), 'co.example', ['h3'], V1);
  // ACK frames (as in a retransmitted Initial) are skipped.
  const withAck = sealInitial({ dcid, frames: concat(hex('02 00 00 00 00'), hex('03 05 00 01 01 00 01 00 00 00'), cryptoFrame(0, hello)) });
  expectQuic(t, sniffQuicInitial(withAck), 'co.example', ['h3'], V1);
});

t.test('bounds and partial verdicts', async (t) => {
  const hello = clientHelloMessage({ sni: 'part.example', alpn: ['h3'], padding: 3000 });
  const dcid = hex('1111111111111111');
  const first = sealInitial({ dcid, frames: cryptoFrame(0, hello.subarray(0, 1000)) });
  const other = sealInitial({ dcid: hex('2222222222222222'), frames: cryptoFrame(1000, hello.subarray(1000, 2000)) });
  const s = new QuicInitialSniffer({ maxDatagrams: 3 });
  t.equal(s.push(first).kind, 'need-more');
  t.equal(s.push(other).kind, 'need-more', 'a different DCID is ignored');
  expectQuic(t, s.push(hex('40 0102')), 'part.example', ['h3'], V1, false);
  t.equal(s.push(first).kind, 'found', 'verdict is sticky');
  const f = new QuicInitialSniffer();
  f.push(first);
  expectQuic(t, f.finish(), 'part.example', ['h3'], V1, false);
  // maxCryptoBytes: the stream is cut at the bound, the prefix decides
  const small = new QuicInitialSniffer({ maxCryptoBytes: 512 });
  expectQuic(t, small.push(first), 'part.example', ['h3'], V1, false);
  t.equal(new QuicInitialSniffer().finish().kind, 'not-this');
});

t.test('not a readable QUIC Initial', async (t) => {
  const hello = clientHelloMessage({ sni: 'n.example' });
  const good = sealInitial({ dcid: hex('0102030405060708'), frames: cryptoFrame(0, hello) });
  const flip = (i: number) => {
    const b = good.slice();
    b[i] = b[i]! ^ 0x01;
    return b;
  };
  const cases: Array<[string, Uint8Array]> = [
    ['short header', concat(hex('40'), good.subarray(1))],
    ['version 0 (negotiation)', concat(hex('c0 00000000'), good.subarray(5))],
    ['unknown version', concat(hex('c0 ff00001d'), good.subarray(5))],
    ['v1 Handshake type', concat(hex('e0'), good.subarray(1))],
    ['corrupted tag', flip(good.length - 1)],
    ['corrupted ciphertext', flip(100)],
    ['corrupted DCID', flip(7)],
    ['under 1200 bytes (RFC 9000 §14.1)', sealInitial({ dcid: hex('0102030405060708'), frames: cryptoFrame(0, hello), datagramSize: 0 })],
    ['DCID of 4 bytes (RFC 9000 §7.2)', sealInitial({ dcid: hex('01020304'), frames: cryptoFrame(0, hello) })],
    ['DCID of 21 bytes', concat(hex('c0 00000001 15'), new Uint8Array(1200))],
    ['Length past the datagram', concat(good.subarray(0, 1100))],
    ['DNS', hex('1234 0100 0001 0000 0000 0000 01 61 00 0001 0001')],
    ['empty', new Uint8Array(0)],
  ];
  for (const [what, bytes] of cases) t.equal(sniffQuicInitial(bytes).kind, 'not-this', what);
  // minDatagramSize 0 lifts the RFC 9000 §14.1 check
  const short = sealInitial({ dcid: hex('0102030405060708'), frames: cryptoFrame(0, hello), datagramSize: 0 });
  expectQuic(t, sniffQuicInitial(short, { minDatagramSize: 0 }), 'n.example', [], V1);
  // A decrypted Initial whose CRYPTO stream is not a ClientHello is QUIC without a name.
  const junk = sealInitial({ dcid: hex('0102030405060708'), frames: cryptoFrame(0, hex('02 000004 00000000')) });
  expectQuic(t, sniffQuicInitial(junk), null, [], V1, false);
  t.throws(() => new QuicInitialSniffer({ maxDatagrams: 0 }), { code: 'SNIFF_ERR_BAD_LIMIT' });
});

t.test('many tiny disjoint CRYPTO fragments stay bounded', async (t) => {
  const hello = clientHelloMessage({ sni: 'tiny.example' });
  const frames: Uint8Array[] = [];
  for (let off = 0; off < hello.length; off += 2) frames.push(cryptoFrame(off, hello.subarray(off, off + 1)));
  const evens = sealInitial({ dcid: hex('0102030405060708'), frames: concat(...frames) });
  const s = new QuicInitialSniffer();
  t.equal(s.push(evens).kind, 'need-more', 'every other byte: holes remain');
  const whole = sealInitial({ dcid: hex('0102030405060708'), pn: 1, frames: cryptoFrame(0, hello) });
  const r = s.push(whole);
  t.equal(r.kind, 'found', 'the full retransmission fills everything');
  if (r.kind === 'found') t.equal(r.serverName, 'tiny.example');
});
