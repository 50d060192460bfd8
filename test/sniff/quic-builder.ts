/**
 * An independent QUIC client-Initial builder for tests (RFC 9001 §5, RFC 9369
 * §3.3): it seals payloads the way a client does, so the sniffer is checked
 * against bytes it did not produce itself. Plus the RFC 9001 Appendix A.2
 * sample packet.
 */
import { createCipheriv, createHmac } from 'node:crypto';
import { concat, hex } from './fixtures.js';

export const V1 = 0x00000001;
export const V2 = 0x6b3343cf;

/** RFC 9001 Appendix A: client DCID. */
export const RFC9001_DCID = hex('8394c8f03e515708');

/** RFC 9001 Appendix A.2: the CRYPTO frame inside the client Initial (ClientHello, SNI example.com, ALPN "alpn"). */
export const RFC9001_CRYPTO_FRAME = hex(`
060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
616d706c652e636f6dff01000100000a00080006001d00170018001000070005
04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
0d0010000e0403050306030203080408050806002d00020101001c0002400100
3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
75300901100f088394c8f03e51570806048000ffff`);

/** RFC 9001 Appendix A.2: the unprotected header (packet number 2, 4 bytes). */
export const RFC9001_HEADER = hex('c300000001088394c8f03e5157080000449e00000002');

/** RFC 9001 Appendix A.2: the protected 1200-byte client Initial datagram. */
export const RFC9001_CLIENT_INITIAL = hex(`
c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11
d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399
1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c
8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212
30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5
457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208
4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec
4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3
485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db
059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c
7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8
9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556
be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74
68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a
c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00
f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632
291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964
25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd
14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff
ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198
e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd
c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73
203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f
cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e
fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade
a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047
90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2
162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4
40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0
6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e
8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0
be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400
54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab
760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9
f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4
056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064
7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241
e221af44860018ab0856972e194cd934
`);

function expandLabel(secret: Uint8Array, label: string, len: number): Buffer {
  const l = Buffer.from('tls13 ' + label);
  const info = Buffer.concat([Buffer.from([len >> 8, len & 255, l.length]), l, Buffer.from([0, 1])]);
  return createHmac('sha256', secret).update(info).digest().subarray(0, len);
}

export interface Keys {
  secret: Buffer;
  key: Buffer;
  iv: Buffer;
  hp: Buffer;
}

const keyCache = new Map<string, Keys>();

export function clientKeys(version: number, dcid: Uint8Array): Keys {
  const id = `${version}:${Buffer.from(dcid).toString('hex')}`;
  const hit = keyCache.get(id);
  if (hit !== undefined) return hit;
  const k = deriveKeys(version, dcid);
  if (keyCache.size < 64) keyCache.set(id, k);
  return k;
}

function deriveKeys(version: number, dcid: Uint8Array): Keys {
  const salt = hex(version === V2 ? '0dede3def700a6db819381be6e269dcbf9bd2ed9' : '38762cf7f55934b34d179ae6a4c80cadccbb7f0a');
  const initial = createHmac('sha256', salt).update(dcid).digest();
  const secret = expandLabel(initial, 'client in', 32);
  const p = version === V2 ? 'quicv2 ' : 'quic ';
  return { secret, key: expandLabel(secret, p + 'key', 16), iv: expandLabel(secret, p + 'iv', 12), hp: expandLabel(secret, p + 'hp', 16) };
}

export function varint(v: number): Uint8Array {
  if (v < 0x40) return Uint8Array.of(v);
  if (v < 0x4000) return Uint8Array.of(0x40 | (v >> 8), v & 0xff);
  return Uint8Array.of(0x80 | ((v >>> 24) & 0x3f), (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

/** RFC 9000 §19.6 CRYPTO frame. */
export function cryptoFrame(offset: number, data: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(0x06), varint(offset), varint(data.length), data);
}

export interface InitialSpec {
  version?: number;
  dcid?: Uint8Array;
  scid?: Uint8Array;
  token?: Uint8Array;
  pn?: number;
  pnLen?: number;
  /** Plaintext frames; padded with PADDING up to the datagram size. */
  frames: Uint8Array;
  /** Pad the packet so the datagram reaches this size (0 = no padding). */
  datagramSize?: number;
}

/** Seals one client Initial packet (RFC 9001 §5.3, §5.4). */
export function sealInitial(spec: InitialSpec): Uint8Array {
  const version = spec.version ?? V1;
  const dcid = spec.dcid ?? RFC9001_DCID;
  const scid = spec.scid ?? new Uint8Array(0);
  const token = spec.token ?? new Uint8Array(0);
  const pn = spec.pn ?? 0;
  const pnLen = spec.pnLen ?? 4;
  const type = version === V2 ? 1 : 0;
  const first = 0xc0 | (type << 4) | (pnLen - 1);
  const pnBytes = new Uint8Array(pnLen);
  for (let i = 0; i < pnLen; i++) pnBytes[pnLen - 1 - i] = (pn >>> (8 * i)) & 0xff;
  const fixed = concat(
    Uint8Array.of(first, (version >>> 24) & 0xff, (version >>> 16) & 0xff, (version >>> 8) & 0xff, version & 0xff),
    Uint8Array.of(dcid.length), dcid, Uint8Array.of(scid.length), scid, varint(token.length), token,
  );
  let payloadLen = spec.frames.length;
  const target = spec.datagramSize ?? 1200;
  // header = fixed + 2-byte length + pn; packet = header + payload + 16
  if (target > 0) payloadLen = Math.max(payloadLen, target - fixed.length - 2 - pnLen - 16);
  const payload = new Uint8Array(payloadLen);
  payload.set(spec.frames);
  const length = pnLen + payloadLen + 16;
  const lenField = Uint8Array.of(0x40 | (length >> 8), length & 0xff);
  const header = concat(fixed, lenField, pnBytes);
  const keys = clientKeys(version, dcid);
  const nonce = Buffer.from(keys.iv);
  for (let i = 0; i < 4; i++) nonce[11 - i] = nonce[11 - i]! ^ ((pn >>> (8 * i)) & 0xff);
  const c = createCipheriv('aes-128-gcm', keys.key, nonce);
  c.setAAD(header);
  const sealed = Buffer.concat([c.update(payload), c.final(), c.getAuthTag()]);
  const packet = concat(header, sealed);
  const pnOffset = header.length - pnLen;
  const ecb = createCipheriv('aes-128-ecb', keys.hp, null);
  ecb.setAutoPadding(false);
  const mask = ecb.update(packet.subarray(pnOffset + 4, pnOffset + 20));
  packet[0] = packet[0]! ^ (mask[0]! & 0x0f);
  for (let i = 0; i < pnLen; i++) packet[pnOffset + i] = packet[pnOffset + i]! ^ mask[1 + i]!;
  return packet;
}
