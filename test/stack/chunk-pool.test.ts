/**
 * The relay's copies between a TcpStream and a kernel socket (issue 10,
 * ask 3). Upload: pooled read chunks (src/stack/chunk-pool.ts): a bulk upload
 * from a TcpStream into a kernel socket reads the client into 64 KiB
 * chunks that come back to the pool after the socket's write callback and
 * are handed out again. The bytes the server gets are exactly the client's
 * (a reused chunk never shows an earlier read's bytes), a handful of
 * chunks carry megabytes (reuse), and every chunk lent comes back once the
 * writes are done (no leak). Download: an upstream socket dialled with
 * the shared read buffer (src/outbound/upstream-read.ts) reads straight
 * into the flow's send ring, and bytes it read before the relay started go
 * first.
 */
import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { relay } from '../../src/engine/relay.js';
import { chunkPoolStats } from '../../src/stack/chunk-pool.js';
import { TCP_ACK, TCP_PSH } from '../../src/wire/tcp.js';
import { settle } from './memory-link.js';
import { establishedFlow } from './established.js';
import { MSS_1460, readTcp, tcpSegment } from './packets.js';
import type { TcpConfig } from '../../src/tcp/config.js';
import { READ_SINK, UPSTREAM_ONREAD, markSharedReads } from '../../src/outbound/upstream-read.js';
import type { EstablishedFlow } from './established.js';

const SEGMENT = 1460;
/** Segments per batch: 58,400 bytes, under the 65,535-byte window of an unscaled SYN, and shorter than a chunk. */
const PER_BATCH = 40;

/** The byte at offset i of the upload: no period a chunk boundary would line up with. */
function patternByte(i: number): number {
  return (i * 7 + (i >>> 11) * 13) & 0xff;
}

function pattern(from: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = patternByte(from + i);
  return b;
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}

t.test('a bulk upload through the relay reuses its read chunks, intact, and gives every one back', async (t) => {
  const f = await establishedFlow(t);
  const got: Buffer[] = [];
  let gotBytes = 0;
  const server = net.createServer((s) => {
    s.on('data', (c: Buffer) => {
      got.push(c);
      gotBytes += c.length;
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const upstream = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await once(upstream, 'connect');
  t.teardown(() => upstream.destroy());

  const before = chunkPoolStats();
  relay(f.stream, upstream, [], () => {}, null);
  const total = 60 * PER_BATCH * SEGMENT; // 3.5 MB
  let seq = f.clientSeq;
  let sent = 0;
  while (sent < total) {
    const batch: Uint8Array[] = [];
    for (let i = 0; i < PER_BATCH && sent < total; i++) {
      batch.push(tcpSegment({ seq, ack: f.iss + 1, flags: TCP_ACK | (i === PER_BATCH - 1 ? TCP_PSH : 0), payload: pattern(sent, SEGMENT) }));
      seq = (seq + SEGMENT) >>> 0;
      sent += SEGMENT;
    }
    f.link.inject(...batch);
    f.link.drain();
    await settle();
    const want = sent;
    await until(`${want} bytes at the server`, () => gotBytes >= want);
  }
  t.equal(gotBytes, total, 'every byte arrived');
  const all = Buffer.concat(got);
  t.ok(all.equals(pattern(0, total)), 'the bytes are the client\'s, in order, nothing from an earlier read');

  await until('the last write callbacks', () => chunkPoolStats().returned - before.returned >= chunkPoolStats().allocated - before.allocated + chunkPoolStats().reused - before.reused);
  const after = chunkPoolStats();
  const allocated = after.allocated - before.allocated;
  const reused = after.reused - before.reused;
  t.ok(f.stream.lendsChunks, 'the stream reads into pooled chunks once the flow is a bulk one');
  t.ok(allocated > 0 && allocated <= 4, `a few chunks allocated (${allocated})`);
  t.ok(reused >= 40, `chunks handed out again (${reused} times for ${total} bytes)`);
  t.equal(after.returned - before.returned, allocated + reused, 'every chunk lent came back after its write');
  t.ok(after.free <= 16, `the pool keeps at most 16 free (${after.free})`);
});

/** Plays the client of a download: takes what the stack sent, in order, and acknowledges it with a full window. */
async function receiveDownload(f: EstablishedFlow, total: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let next = (f.iss + 1) >>> 0;
  let have = 0;
  for (let spins = 0; have < total && spins < 5000; spins++) {
    let progressed = false;
    for (const p of f.link.drain()) {
      const seg = readTcp(p);
      if (seg.payload.length === 0 || seg.seq !== next) continue;
      parts.push(Buffer.from(seg.payload));
      next = (next + seg.payload.length) >>> 0;
      have += seg.payload.length;
      progressed = true;
    }
    if (progressed) f.link.inject(tcpSegment({ seq: f.clientSeq, ack: next, flags: TCP_ACK, window: 65535 }));
    else f.clock.now += 1;
    await new Promise((r) => setTimeout(r, 1));
  }
  return Buffer.concat(parts);
}

/** The server's bytes, whole in one write or in `piece`-byte writes a turn apart (reads smaller than the ring). */
function sendPattern(s: net.Socket, total: number, piece: number): void {
  if (piece <= 0) {
    s.end(pattern(0, total));
    return;
  }
  let off = 0;
  const next = (): void => {
    const n = Math.min(piece, total - off);
    s.write(pattern(off, n));
    off += n;
    if (off < total) setTimeout(next, 1);
    else s.end();
  };
  next();
}

async function downloadThroughRelay(t: { teardown(fn: () => void): void }, banner: Buffer, total: number, tcp: Partial<TcpConfig> = {}, piece = 0): Promise<{ got: Buffer; sinkSet: boolean; queuedWrites: number }> {
  const f = await establishedFlow(t, 4, MSS_1460, tcp);
  // Writes that went the Writable way (bytes copied out of the shared read buffer and queued).
  let queuedWrites = 0;
  const write = f.stream.write.bind(f.stream) as (...args: unknown[]) => boolean;
  (f.stream as { write: (...args: unknown[]) => boolean }).write = (...args: unknown[]) => {
    queuedWrites++;
    return write(...args);
  };
  const server = net.createServer((s) => {
    s.write(banner);
    s.once('data', () => sendPattern(s, total, piece));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const upstream = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', onread: UPSTREAM_ONREAD });
  markSharedReads(upstream);
  await once(upstream, 'connect');
  t.teardown(() => upstream.destroy());
  if (banner.length > 0) {
    await until('the banner in the socket\'s buffer', () => upstream.readableLength === banner.length);
  }
  relay(f.stream, upstream, [Buffer.from('go')], () => {}, null);
  const sinkSet = (upstream as net.Socket & { [READ_SINK]?: unknown })[READ_SINK] !== undefined;
  const got = await receiveDownload(f, banner.length + total);
  return { got, sinkSet, queuedWrites };
}

t.test('a download through the relay goes from the socket\'s shared read buffer into the send ring, intact', async (t) => {
  const total = 2 * 1024 * 1024 + 12345;
  const { got, sinkSet, queuedWrites } = await downloadThroughRelay(t, Buffer.alloc(0), total);
  t.ok(sinkSet, 'the relay is the socket\'s read sink');
  // 2 MiB through a 256 KiB send ring fills it many times: the socket pauses while less than a read's room is left, so no read is left over.
  t.equal(queuedWrites, 0, 'no bytes copied out and queued: every read fit the send ring');
  t.equal(got.length, total, `every byte arrived (${got.length})`);
  t.ok(got.equals(pattern(0, total)), 'the bytes are the server\'s, in order');
});

t.test('a send ring smaller than one read still carries a download whole (the paused socket resumes once the ring is empty)', async (t) => {
  const total = 300 * 1024 + 7;
  // Whole 64 KiB reads (each only partly taken) and 4 KiB reads that fit with less than a read's room left (the socket pauses).
  for (const piece of [0, 4096]) {
    const { got } = await downloadThroughRelay(t, Buffer.alloc(0), total, { sendBufferBytes: 16 * 1024 }, piece);
    t.equal(got.length, total, `every byte arrived (${got.length}; the server writing ${piece === 0 ? 'at once' : `${piece} B at a time`})`);
    t.ok(got.equals(pattern(0, total)), 'the bytes are the server\'s, in order');
  }
});

t.test('bytes the socket read before the relay started reach the client first', async (t) => {
  const banner = Buffer.from('220 banner before the relay\r\n');
  const total = 512 * 1024;
  const { got, sinkSet } = await downloadThroughRelay(t, banner, total);
  t.notOk(sinkSet, 'no sink while earlier bytes wait in the socket');
  t.equal(got.length, banner.length + total, 'every byte arrived');
  t.ok(got.equals(Buffer.concat([banner, pattern(0, total)])), 'banner first, then the rest, in order');
});
