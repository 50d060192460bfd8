/**
 * QUIC Initial packet protection for the client direction (RFC 9001 §5),
 * just enough to read a client's Initial: key derivation from the
 * Destination Connection ID (§5.2), header protection removal (§5.4) and
 * AEAD opening (§5.3) with AES-128-GCM. QUIC v2 (RFC 9369 §3.3.1-3.3.2)
 * differs only in the salt and the HKDF labels.
 *
 * Crypto is node:crypto; a failed open (wrong keys, hostile bytes) returns
 * null and never throws.
 */
import { Buffer } from 'node:buffer';
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, type Cipher } from 'node:crypto';

export const QUIC_V1 = 0x00000001;
export const QUIC_V2 = 0x6b3343cf;

/** RFC 9001 §5.2 initial_salt. */
const SALT_V1 = Buffer.from('38762cf7f55934b34d179ae6a4c80cadccbb7f0a', 'hex');
/** RFC 9369 §3.3.1 initial_salt. */
const SALT_V2 = Buffer.from('0dede3def700a6db819381be6e269dcbf9bd2ed9', 'hex');

const TAG_LEN = 16;
export const SAMPLE_LEN = 16;

export interface InitialKeys {
  readonly key: Buffer;
  readonly iv: Buffer;
  readonly hp: Buffer;
  /** AES-128-ECB with the hp key, reused: ECB has no chaining, so one cipher serves every sample. */
  readonly hpCipher: Cipher;
}

/** HkdfLabel (RFC 8446 §7.1): uint16 length, opaque label<7..255> = "tls13 " + label, opaque context<0..255> = "". */
function hkdfLabel(label: string, length: number): Buffer {
  const full = Buffer.from('tls13 ' + label, 'latin1');
  const info = Buffer.allocUnsafe(2 + 1 + full.length + 1);
  info.writeUInt16BE(length, 0);
  info[2] = full.length;
  full.copy(info, 3);
  info[3 + full.length] = 0;
  return info;
}

/** HKDF-Expand-Label for lengths <= 32 (one HMAC-SHA256 block: T(1) = HMAC(PRK, info | 0x01)). */
export function hkdfExpandLabel(secret: Uint8Array, label: string, length: number): Buffer {
  const h = createHmac('sha256', secret);
  h.update(hkdfLabel(label, length));
  h.update(Buffer.of(1));
  return h.digest().subarray(0, length);
}

/** client_initial_secret = HKDF-Expand-Label(HKDF-Extract(salt, dcid), "client in", "", 32) (RFC 9001 §5.2). */
export function clientInitialSecret(version: number, dcid: Uint8Array): Buffer {
  const salt = version === QUIC_V2 ? SALT_V2 : SALT_V1;
  // hkdfSync is Extract then Expand, which is exactly this composition.
  return Buffer.from(hkdfSync('sha256', dcid, salt, hkdfLabel('client in', 32), 32));
}

/** Derives the client Initial key, iv and header-protection key for `version` and the client's first DCID. */
export function deriveClientInitialKeys(version: number, dcid: Uint8Array): InitialKeys {
  const secret = clientInitialSecret(version, dcid);
  const prefix = version === QUIC_V2 ? 'quicv2 ' : 'quic ';
  const key = hkdfExpandLabel(secret, prefix + 'key', 16);
  const iv = hkdfExpandLabel(secret, prefix + 'iv', 12);
  const hp = hkdfExpandLabel(secret, prefix + 'hp', 16);
  const hpCipher = createCipheriv('aes-128-ecb', hp, null);
  hpCipher.setAutoPadding(false);
  return { key, iv, hp, hpCipher };
}

/** RFC 9001 §5.4.3: mask = AES-ECB(hp_key, sample); the first 5 bytes are used. */
export function headerProtectionMask(keys: InitialKeys, sample: Uint8Array): Buffer {
  return keys.hpCipher.update(sample);
}

const nonce = Buffer.alloc(12);

/**
 * Opens an Initial payload (RFC 9001 §5.3): nonce = iv XOR packet number
 * (left-padded), AAD = the unprotected header. `sealed` is ciphertext || tag.
 * Returns the plaintext or null when authentication fails.
 */
export function openPayload(keys: InitialKeys, packetNumber: number, aad: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (sealed.length < TAG_LEN + 1) return null;
  keys.iv.copy(nonce);
  // Packet numbers here are < 2^32 (at most 4 bytes on the wire).
  nonce[8] = nonce[8]! ^ ((packetNumber >>> 24) & 0xff);
  nonce[9] = nonce[9]! ^ ((packetNumber >>> 16) & 0xff);
  nonce[10] = nonce[10]! ^ ((packetNumber >>> 8) & 0xff);
  nonce[11] = nonce[11]! ^ (packetNumber & 0xff);
  try {
    const d = createDecipheriv('aes-128-gcm', keys.key, nonce, { authTagLength: TAG_LEN });
    d.setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
    const head = d.update(sealed.subarray(0, sealed.length - TAG_LEN));
    const tail = d.final(); // throws on a bad tag
    return tail.length === 0 ? head : Buffer.concat([head, tail]);
  } catch {
    return null;
  }
}
