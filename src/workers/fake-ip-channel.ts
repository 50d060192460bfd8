/**
 * One fake-IP pool for every worker thread (tun.queues > 1).
 *
 * The main thread owns the only FakeIpPool: one LRU, one persist file, one
 * POST /cache/fakeip/flush. A worker's engine holds a RemoteFakeIpPool,
 * which answers the range checks (isFake, isFakeBytes: configuration only)
 * itself and asks the main thread for everything that reads or changes a
 * mapping (allocate, peek, lookup, clear), synchronously, over a
 * SharedArrayBuffer: the worker writes the request, wakes the main thread
 * with a message on a MessagePort and blocks in Atomics.wait until the
 * answer is in the buffer.
 *
 * Why blocking, and why not a shared table: the DNS hijack answers a fake-IP
 * query synchronously (src/dns/server.ts answerFake) and the engine maps a
 * SYN's destination back to its name synchronously, so a synchronous ask
 * keeps both paths as they are; and because the main thread has written the
 * mapping before the worker sends its DNS answer, a flow the kernel then
 * hashes to any other queue finds the same name: consistency by
 * construction, with no hash table, LRU or lock in shared memory. The cost
 * is one round trip to the main thread (an idle event loop: tens of
 * microseconds) per fake-IP DNS answer and per new flow to a fake address;
 * packets of established flows never ask.
 *
 * The DNS snoop table (real-ip mode, dns.fakeIp.filter) is kept the same
 * way: the main thread's DnsSnoop records the answers every worker's hijack
 * forwards (the answer's question, rcode and address records, as JSON) and
 * answers every worker's address-to-name lookups, so a flow finds the name
 * whichever queue carried the DNS answer.
 *
 * Layout of the buffer: one Int32 "word" (sequence << 2 | phase), the
 * request (op, length, bytes: written only by the worker), the reply
 * (length, bytes: written only by the main thread). The main thread
 * publishes its reply with compareExchange on the word, so a reply to a
 * request the worker gave up on (timeout) is dropped, never read as the
 * answer to a later one.
 */
import type { MessagePort } from 'node:worker_threads';
import { FakeIpPool, type FakeIpPoolOptions, type FakeIpStats, type RestoreResult } from '../dns/fake-ip.js';
import { formatIp, parseIp } from '../dns/address.js';
import { DnsSnoop, type DnsSnoopStats } from '../dns/snoop.js';
import type { DnsMessage } from '../dns/message.js';

const PHASE_IDLE = 0;
const PHASE_REQUEST = 1;
const PHASE_REPLY = 2;

const OP_ALLOC4 = 1;
const OP_ALLOC6 = 2;
const OP_PEEK4 = 3;
const OP_PEEK6 = 4;
const OP_LOOKUP4 = 5;
const OP_LOOKUP6 = 6;
const OP_CLEAR = 7;
const OP_SNOOP_OBSERVE = 8;
const OP_SNOOP_LOOKUP = 9;

/** Names are at most 253 bytes on the wire; canonical text of a longer one is refused by the DNS parser first. */
const DATA_BYTES = 1024;
/** Int32 slots: word, request op, request length, reply length. */
const HEADER_INTS = 4;
/**
 * The table sizes: one small buffer shared by every worker (newTableSizes),
 * the main thread's pool and snoop entry counts (publishSizes). While a
 * table is empty a worker answers "not mapped" without asking. One buffer
 * for all, so an entry added through one worker's ask is visible to every
 * other worker before that ask's reply (and so before the client has the
 * DNS answer).
 */
const SLOT_POOL_SIZE = 0;
const SLOT_SNOOP_SIZE = 1;

export function newTableSizes(): SharedArrayBuffer {
  return new SharedArrayBuffer(8);
}
const REQ_OFF = HEADER_INTS * 4;
const REPLY_OFF = REQ_OFF + DATA_BYTES;
export const FAKE_IP_CHANNEL_BYTES = REPLY_OFF + DATA_BYTES;

/** How long a worker waits for the main thread before answering "not mapped" (counted as a timeout). */
const ASK_TIMEOUT_MS = 2000;

export function newFakeIpChannel(): SharedArrayBuffer {
  return new SharedArrayBuffer(FAKE_IP_CHANNEL_BYTES);
}

/**
 * Main thread: answers one worker's request from the pool. Called on every
 * wake message; a duplicate or stale wake finds no request and does nothing.
 */
export class FakeIpChannelServer {
  private readonly hdr: Int32Array;
  private readonly req: Buffer;
  private readonly reply: Buffer;
  private readonly scratch = Buffer.alloc(DATA_BYTES);
  served = 0;

  private readonly sizes: Int32Array;

  constructor(
    sab: SharedArrayBuffer,
    sizes: SharedArrayBuffer,
    private readonly pool: FakeIpPool | null,
    private readonly snoop: DnsSnoop | null = null,
  ) {
    this.sizes = new Int32Array(sizes, 0, 2);
    this.hdr = new Int32Array(sab, 0, HEADER_INTS);
    this.req = Buffer.from(sab, REQ_OFF, DATA_BYTES);
    this.reply = Buffer.from(sab, REPLY_OFF, DATA_BYTES);
    this.publishSizes();
  }

  serve(): void {
    const word = Atomics.load(this.hdr, 0);
    if ((word & 3) !== PHASE_REQUEST) return;
    const op = this.hdr[1]!;
    const len = Math.min(Math.max(this.hdr[2]!, 0), DATA_BYTES);
    this.req.copy(this.scratch, 0, 0, len);
    // The worker rewrites the request only after giving up on this one (word changed): then the copy may be torn; drop it.
    if (Atomics.load(this.hdr, 0) !== word) return;
    const answer = this.answer(op, this.scratch.subarray(0, len));
    let out = -1;
    if (answer !== null) out = this.reply.write(answer, 0, 'utf8');
    this.hdr[3] = out;
    // Before the reply: a worker that sees it also sees the table no longer empty.
    this.publishSizes();
    if (Atomics.compareExchange(this.hdr, 0, word, (word & ~3) | PHASE_REPLY) === word) {
      this.served++;
      Atomics.notify(this.hdr, 0);
    }
  }

  /**
   * Publishes the entry counts (for every worker). Called after every
   * answer and by the pool every SIZES_REFRESH_MS (pool.ts), for changes
   * made on the main thread itself (a TPROXY flow's DNS, a flush): those
   * reach the workers within that delay.
   */
  publishSizes(): void {
    let poolSize = 0;
    if (this.pool !== null) {
      const st = this.pool.stats();
      poolSize = st.v4Entries + st.v6Entries;
    }
    Atomics.store(this.sizes, SLOT_POOL_SIZE, poolSize);
    Atomics.store(this.sizes, SLOT_SNOOP_SIZE, this.snoop?.size ?? 0);
  }

  private answer(op: number, data: Buffer): string | null {
    if (op === OP_SNOOP_OBSERVE || op === OP_SNOOP_LOOKUP) return this.answerSnoop(op, data);
    const p = this.pool;
    if (p === null) return null;
    switch (op) {
      case OP_ALLOC4:
        return p.allocateIpv4(data.toString('utf8'));
      case OP_ALLOC6:
        return p.allocateIpv6(data.toString('utf8'));
      case OP_PEEK4:
        return p.peek(data.toString('utf8'), 4);
      case OP_PEEK6:
        return p.peek(data.toString('utf8'), 6);
      case OP_LOOKUP4:
        return data.length === 4 ? p.lookupBytes(data, 0, 4) : null;
      case OP_LOOKUP6:
        return data.length === 16 ? p.lookupBytes(data, 0, 6) : null;
      case OP_CLEAR:
        return String(p.clear());
      default:
        return null;
    }
  }

  private answerSnoop(op: number, data: Buffer): string | null {
    const s = this.snoop;
    if (s === null) return null;
    if (op === OP_SNOOP_LOOKUP) return s.lookup(data.toString('utf8'));
    let msg: DnsMessage;
    try {
      msg = JSON.parse(data.toString('utf8')) as DnsMessage;
    } catch {
      return null;
    }
    return String(s.observe(msg));
  }
}

/** A worker's end of the channel: one synchronous ask at a time (a worker thread is single-threaded). */
export class MainChannel {
  private readonly hdr: Int32Array;
  readonly req: Buffer;
  private readonly reply: Buffer;
  private seq = 0;
  asks = 0;
  /** Asks the main thread did not answer in time (answered "not mapped"). */
  timeouts = 0;

  private readonly sizes: Int32Array;

  constructor(
    sab: SharedArrayBuffer,
    sizes: SharedArrayBuffer,
    private readonly wake: MessagePort,
  ) {
    this.sizes = new Int32Array(sizes, 0, 2);
    this.hdr = new Int32Array(sab, 0, HEADER_INTS);
    this.req = Buffer.from(sab, REQ_OFF, DATA_BYTES);
    this.reply = Buffer.from(sab, REPLY_OFF, DATA_BYTES);
  }

  /** Whether the main thread's pool / snoop table is empty now (then nothing can be mapped). */
  get poolEmpty(): boolean {
    return Atomics.load(this.sizes, SLOT_POOL_SIZE) === 0;
  }

  get snoopEmpty(): boolean {
    return Atomics.load(this.sizes, SLOT_SNOOP_SIZE) === 0;
  }

  askText(op: number, text: string): string | null {
    const len = this.req.write(text, 0, 'utf8');
    if (len >= DATA_BYTES) return null; // cannot be a DNS name (or an answer worth recording)
    return this.ask(op, len);
  }

  /** One synchronous round trip (request bytes already in req). */
  ask(op: number, len: number): string | null {
    this.asks++;
    this.seq = (this.seq + 1) & 0x1fffffff;
    const word = (this.seq << 2) | PHASE_REQUEST;
    this.hdr[1] = op;
    this.hdr[2] = len;
    Atomics.store(this.hdr, 0, word);
    this.wake.postMessage(0);
    const replied = (word & ~3) | PHASE_REPLY;
    const until = Date.now() + ASK_TIMEOUT_MS;
    for (;;) {
      const now = Atomics.load(this.hdr, 0);
      if (now === replied) break;
      const left = until - Date.now();
      if (left <= 0) {
        // Give up unless the reply landed meanwhile; a late reply then fails its compareExchange.
        if (Atomics.compareExchange(this.hdr, 0, word, (word & ~3) | PHASE_IDLE) === word) {
          this.timeouts++;
          return null;
        }
        continue;
      }
      Atomics.wait(this.hdr, 0, now, left);
    }
    const n = this.hdr[3]!;
    return n < 0 ? null : this.reply.toString('utf8', 0, n);
  }
}

/**
 * A worker's view of the main thread's pool: the FakeIpPool interface the
 * engine and the DNS hijack use. Built with the same options as the main
 * pool, so its (empty) family pools answer the range checks locally.
 */
export class RemoteFakeIpPool extends FakeIpPool {
  private readonly hits = { reverseHits: 0, reverseMisses: 0, allocations: 0 };

  constructor(
    opts: FakeIpPoolOptions,
    private readonly ch: MainChannel,
  ) {
    super(opts);
  }

  override allocateIpv4(domain: string): string | null {
    if (!this.hasIpv4) return null;
    this.hits.allocations++;
    return this.ch.askText(OP_ALLOC4, domain);
  }

  override allocateIpv6(domain: string): string | null {
    if (!this.hasIpv6) return null;
    this.hits.allocations++;
    return this.ch.askText(OP_ALLOC6, domain);
  }

  override peek(domain: string, family: 4 | 6): string | null {
    if (family === 4 ? !this.hasIpv4 : !this.hasIpv6) return null;
    return this.ch.askText(family === 4 ? OP_PEEK4 : OP_PEEK6, domain);
  }

  override lookup(addr: string): string | null {
    const b = parseIp(addr);
    if (b === null) return null;
    return this.lookupBytes(b, 0, b.length === 4 ? 4 : 6);
  }

  override lookupBytes(buf: Uint8Array, off: number, family: 4 | 6): string | null {
    if (!this.isFakeBytes(buf, off, family) || this.ch.poolEmpty) {
      this.hits.reverseMisses++;
      return null;
    }
    const n = family === 4 ? 4 : 16;
    const req = this.ch.req;
    for (let i = 0; i < n; i++) req[i] = buf[off + i]!;
    const name = this.ch.ask(family === 4 ? OP_LOOKUP4 : OP_LOOKUP6, n);
    if (name === null) this.hits.reverseMisses++;
    else this.hits.reverseHits++;
    return name;
  }

  override clear(): number {
    const n = this.ch.ask(OP_CLEAR, 0);
    return n === null ? 0 : Number(n);
  }

  /** This worker's asks only; the pool's own numbers are the main thread's (GET /v1/stats, metrics). */
  override stats(): FakeIpStats {
    return { v4Entries: 0, v6Entries: 0, v4Capacity: 0, v6Capacity: 0, recycled: 0, ...this.hits };
  }

  /** The main thread saves and restores the one pool. */
  override async persist(_path: string): Promise<void> {}

  override async restore(_path: string): Promise<RestoreResult> {
    return { restored: 0, skipped: 0, error: 'missing' };
  }
}

/** A worker's view of the main thread's DNS snoop table. */
export class RemoteDnsSnoop extends DnsSnoop {
  private observed = 0;
  private looked = 0;

  constructor(private readonly ch: MainChannel) {
    super({ maxEntries: 0, now: () => Date.now() / 1000 });
  }

  override observe(msg: DnsMessage): number {
    this.observed++;
    const q = msg.questions[0];
    if (!msg.qr || q === undefined) return 0;
    // What DnsSnoop.observe reads, nothing else: the question, rcode, and the CNAME / A / AAAA records.
    const slim = {
      qr: msg.qr,
      rcode: msg.rcode,
      questions: [{ name: q.name }],
      answers: msg.answers.filter((r) => r.address !== null || r.target !== null).map((r) => ({ type: r.type, class: r.class, name: r.name, target: r.target, ttl: r.ttl, address: r.address })),
    };
    const n = this.ch.askText(OP_SNOOP_OBSERVE, JSON.stringify(slim));
    return n === null ? 0 : Number(n);
  }

  override lookup(addr: string): string | null {
    this.looked++;
    // The common case without hijacked answers (real-ip, dns.hijack off): no round trip per flow.
    if (this.ch.snoopEmpty) return null;
    return this.ch.askText(OP_SNOOP_LOOKUP, addr);
  }

  override lookupAddress(addr: Uint8Array): string | null {
    this.looked++;
    if (this.ch.snoopEmpty) return null;
    return this.ch.askText(OP_SNOOP_LOOKUP, formatIp(addr));
  }

  override get size(): number {
    return 0;
  }

  override stats(): DnsSnoopStats {
    return { entries: 0, recorded: this.observed, ignored: 0, hits: this.looked, misses: 0, evictions: 0 };
  }
}
