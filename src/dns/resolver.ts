/**
 * Upstream resolvers: UDP (RFC 1035 4.2.1), TCP (RFC 1035 4.2.2, RFC 7766)
 * and DNS-over-HTTPS (RFC 8484, POST application/dns-message), plus a chain
 * that tries them in order under a per-attempt timeout and an overall
 * deadline.
 *
 * Each resolver takes the query bytes and returns the raw answer bytes with
 * the caller's id restored. Spoofing resistance (RFC 5452): a fresh random
 * id per attempt (and a fresh socket, so a fresh source port), connected UDP
 * sockets (the kernel drops datagrams from other peers), and an answer is
 * accepted only when its id, QR bit and question (case-insensitively) match.
 *
 * Sockets come from injectable factories so the engine can hand out marked
 * sockets (SO_MARK, SO_BINDTODEVICE) or streams through an outbound proxy;
 * DoH takes an undici Dispatcher for the same reason.
 */
import { randomFillSync } from 'node:crypto';
import dgram from 'node:dgram';
import net, { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { undici } from '../outbound/undici.js';
import { DnsError, type DnsErrorCode } from './errors.js';
import { decodeMessage, DnsRcode, frameTcp, namesEqual, TcpFrameReader, writeId, type DnsQuestion } from './message.js';

export interface QueryOptions {
  /** Aborts the query (rejects with SLUICE_DNS_ABORTED). */
  signal?: AbortSignal;
  /** Overall budget for this query in ms; the resolver's own timeout still applies per try. */
  timeoutMs?: number;
}

export interface Resolver {
  readonly name: string;
  query(query: Uint8Array, opts?: QueryOptions): Promise<Uint8Array>;
  /** Releases what the resolver keeps between queries (a DoH dispatcher's connections); optional. */
  close?(): Promise<void>;
}

const idScratch = new Uint16Array(1);
function defaultRandomId(): number {
  randomFillSync(idScratch);
  return idScratch[0]!;
}

interface Prepared {
  bytes: Uint8Array;
  question: DnsQuestion;
  originalId: number;
}

function prepare(query: Uint8Array): Prepared {
  const m = decodeMessage(query).message;
  if (m === null || m.qr || m.questions.length !== 1) {
    throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', 'resolver query must be a parseable DNS query with exactly one question');
  }
  return { bytes: query.slice(), question: m.questions[0]!, originalId: m.id };
}

/** Whether `answer` answers `q` with id `id`; false for anything unparseable. */
function answerMatches(answer: Uint8Array, q: DnsQuestion, id: number | null): boolean {
  const m = decodeMessage(answer).message;
  if (m === null || !m.qr) return false;
  if (id !== null && m.id !== id) return false;
  // RFC 1035 7.3: the question must be the one we asked. A FORMERR/NOTIMP
  // reply may omit the question; accept those when the id matches.
  const aq = m.questions[0];
  if (aq === undefined) return m.rcode === DnsRcode.FormErr || m.rcode === DnsRcode.NotImp || m.rcode === DnsRcode.Refused;
  return aq.type === q.type && aq.class === q.class && namesEqual(aq.name, q.name);
}

function isTruncated(answer: Uint8Array): boolean {
  return answer.length >= 4 && (answer[2]! & 0x02) !== 0;
}

function errnoCode(err: unknown): DnsErrorCode {
  return (err as NodeJS.ErrnoException | null)?.code === 'ECONNREFUSED' ? 'SLUICE_DNS_CONNECTION_REFUSED' : 'SLUICE_DNS_NETWORK';
}

function toDnsError(err: unknown, what: string): DnsError {
  if (err instanceof DnsError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new DnsError(errnoCode(err), `${what}: ${msg}`, { cause: err });
}

function formatHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

// ---------------------------------------------------------------------------
// UDP

export interface UdpResolverOptions {
  host: string;
  port?: number;
  /** Timeout per try (ms), default 2000. */
  timeoutMs?: number;
  /** Extra tries after the first, default 1. */
  retries?: number;
  /** Socket factory (engine: marked sockets); default dgram.createSocket. */
  createUdpSocket?: (family: 4 | 6) => Promise<dgram.Socket>;
  /** Asked again when an answer comes back truncated (RFC 7766 5); default none: the TC answer is returned. */
  tcpFallback?: Resolver | null;
  randomId?: () => number;
  name?: string;
}

function defaultUdpSocket(family: 4 | 6): Promise<dgram.Socket> {
  return Promise.resolve(dgram.createSocket(family === 6 ? 'udp6' : 'udp4'));
}

export class UdpResolver implements Resolver {
  readonly name: string;
  private readonly host: string;
  private readonly port: number;
  private readonly family: 4 | 6;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly createUdpSocket: (family: 4 | 6) => Promise<dgram.Socket>;
  private readonly tcpFallback: Resolver | null;
  private readonly randomId: () => number;
  /** Datagrams that reached us but did not match (spoofing or late answers). */
  mismatched = 0;

  constructor(o: UdpResolverOptions) {
    const fam = isIP(o.host);
    if (fam === 0) throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `UDP upstream host must be an IP literal, got ${JSON.stringify(o.host)}`);
    this.host = o.host;
    this.port = o.port ?? 53;
    this.family = fam === 6 ? 6 : 4;
    this.timeoutMs = o.timeoutMs ?? 2000;
    this.retries = o.retries ?? 1;
    this.createUdpSocket = o.createUdpSocket ?? defaultUdpSocket;
    this.tcpFallback = o.tcpFallback ?? null;
    this.randomId = o.randomId ?? defaultRandomId;
    this.name = o.name ?? `udp://${formatHostPort(this.host, this.port)}`;
  }

  async query(query: Uint8Array, opts: QueryOptions = {}): Promise<Uint8Array> {
    const p = prepare(query);
    if (opts.signal?.aborted) throw new DnsError('SLUICE_DNS_ABORTED', `${this.name}: aborted`);
    let sock: dgram.Socket;
    try {
      sock = await this.createUdpSocket(this.family);
    } catch (err) {
      throw toDnsError(err, `${this.name}: socket`);
    }
    const answer = await this.exchange(sock, p, opts);
    if (isTruncated(answer) && this.tcpFallback !== null) return this.tcpFallback.query(query, opts);
    return answer;
  }

  private exchange(sock: dgram.Socket, p: Prepared, opts: QueryOptions): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const ids: number[] = [];
      let tries = 0;
      let retryTimer: NodeJS.Timeout | null = null;
      let budgetTimer: NodeJS.Timeout | null = null;
      let done = false;
      const finish = (err: DnsError | null, answer?: Uint8Array): void => {
        if (done) return;
        done = true;
        if (retryTimer !== null) clearTimeout(retryTimer);
        if (budgetTimer !== null) clearTimeout(budgetTimer);
        opts.signal?.removeEventListener('abort', onAbort);
        sock.removeListener('message', onMessage);
        sock.removeListener('error', onError);
        sock.on('error', () => undefined); // late ICMP errors after close
        try {
          sock.close();
        } catch {
          // already closed
        }
        if (err !== null) reject(err);
        else resolve(answer!);
      };
      const onAbort = (): void => finish(new DnsError('SLUICE_DNS_ABORTED', `${this.name}: aborted`));
      const onError = (err: Error): void => finish(toDnsError(err, this.name));
      const onMessage = (msg: Buffer): void => {
        for (const id of ids) {
          if (answerMatches(msg, p.question, id)) {
            const out = new Uint8Array(msg.length);
            out.set(msg);
            writeId(out, p.originalId);
            finish(null, out);
            return;
          }
        }
        this.mismatched++;
      };
      const timeout = (): void => finish(new DnsError('SLUICE_DNS_TIMEOUT', `${this.name}: no answer after ${tries} tries`));
      const send = (): void => {
        if (tries > this.retries) return timeout();
        tries++;
        const id = this.randomId() & 0xffff;
        ids.push(id);
        writeId(p.bytes, id);
        sock.send(p.bytes, (err) => {
          if (err) onError(err);
        });
        retryTimer = setTimeout(send, this.timeoutMs);
      };
      sock.on('message', onMessage);
      sock.on('error', onError);
      // The socket factory is async: the signal may have fired meanwhile.
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      // The caller's overall budget is its own timer, so retries and budget
      // are measured on the same (event loop) clock.
      if (opts.timeoutMs !== undefined && Number.isFinite(opts.timeoutMs)) budgetTimer = setTimeout(timeout, Math.max(0, opts.timeoutMs));
      try {
        // Connected: the kernel filters other sources and reports ICMP port
        // unreachable as ECONNREFUSED, so a dead upstream fails fast.
        sock.connect(this.port, this.host, () => {
          if (!done) send();
        });
      } catch (err) {
        onError(err as Error);
      }
    });
  }
}

// ---------------------------------------------------------------------------
// TCP

export interface TcpResolverOptions {
  host: string;
  port?: number;
  /** Whole-exchange timeout (connect included), default 5000 ms. */
  timeoutMs?: number;
  /** Stream factory (engine: marked sockets or a proxy outbound); default net.connect. */
  connect?: (host: string, port: number) => Promise<Duplex>;
  randomId?: () => number;
  name?: string;
}

function defaultConnect(host: string, port: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const onError = (err: Error): void => reject(err);
    s.once('error', onError);
    s.once('connect', () => {
      s.removeListener('error', onError);
      s.setNoDelay(true);
      resolve(s);
    });
  });
}

/** Mismatching frames tolerated on one connection before giving up. */
const MAX_TCP_MISMATCHES = 8;

export class TcpResolver implements Resolver {
  readonly name: string;
  private readonly host: string;
  private readonly port: number;
  private readonly timeoutMs: number;
  private readonly connect: (host: string, port: number) => Promise<Duplex>;
  private readonly randomId: () => number;

  constructor(o: TcpResolverOptions) {
    this.host = o.host;
    this.port = o.port ?? 53;
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.connect = o.connect ?? defaultConnect;
    this.randomId = o.randomId ?? defaultRandomId;
    this.name = o.name ?? `tcp://${formatHostPort(this.host, this.port)}`;
  }

  query(query: Uint8Array, opts: QueryOptions = {}): Promise<Uint8Array> {
    const p = prepare(query);
    const id = this.randomId() & 0xffff;
    writeId(p.bytes, id);
    const budget = Math.min(this.timeoutMs, opts.timeoutMs ?? Infinity);
    return new Promise<Uint8Array>((resolve, reject) => {
      let done = false;
      let conn: Duplex | null = null;
      const reader = new TcpFrameReader();
      let mismatches = 0;
      const finish = (err: DnsError | null, answer?: Uint8Array): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (conn !== null) {
          conn.removeAllListeners('data');
          conn.on('error', () => undefined);
          conn.destroy();
        }
        if (err !== null) reject(err);
        else resolve(answer!);
      };
      const timer = setTimeout(() => finish(new DnsError('SLUICE_DNS_TIMEOUT', `${this.name}: no answer within ${budget} ms`)), budget);
      const onAbort = (): void => finish(new DnsError('SLUICE_DNS_ABORTED', `${this.name}: aborted`));
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.connect(this.host, this.port).then(
        (c) => {
          if (done) {
            c.on('error', () => undefined);
            c.destroy();
            return;
          }
          conn = c;
          c.on('error', (err) => finish(toDnsError(err, this.name)));
          c.on('close', () => finish(new DnsError('SLUICE_DNS_NETWORK', `${this.name}: connection closed before an answer`)));
          c.on('end', () => finish(new DnsError('SLUICE_DNS_NETWORK', `${this.name}: connection closed before an answer`)));
          c.on('data', (chunk: Buffer) => {
            reader.push(chunk);
            for (let m = reader.next(); m !== null; m = reader.next()) {
              if (answerMatches(m, p.question, id)) {
                const out = m.slice();
                writeId(out, p.originalId);
                finish(null, out);
                return;
              }
              if (++mismatches > MAX_TCP_MISMATCHES) {
                finish(new DnsError('SLUICE_DNS_BAD_RESPONSE', `${this.name}: answers do not match the query`));
                return;
              }
            }
          });
          c.write(frameTcp(p.bytes));
        },
        (err: unknown) => finish(toDnsError(err, `${this.name}: connect`)),
      );
    });
  }
}

// ---------------------------------------------------------------------------
// DNS over HTTPS

export interface DohResolverOptions {
  /** e.g. "https://dns.example/dns-query" (http:// accepted for tests). */
  url: string;
  timeoutMs?: number;
  /** undici Dispatcher, so the engine can route DoH through an outbound. */
  dispatcher?: Dispatcher;
  name?: string;
}

const DNS_MESSAGE = 'application/dns-message';

export class DohResolver implements Resolver {
  readonly name: string;
  private readonly url: string;
  private readonly timeoutMs: number;
  private readonly dispatcher: Dispatcher | undefined;

  constructor(o: DohResolverOptions) {
    let u: URL;
    try {
      u = new URL(o.url);
    } catch {
      throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `DoH URL does not parse: ${JSON.stringify(o.url)}`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `DoH URL must be https://, got ${o.url}`);
    this.url = o.url;
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.dispatcher = o.dispatcher;
    this.name = o.name ?? o.url;
  }

  async query(query: Uint8Array, opts: QueryOptions = {}): Promise<Uint8Array> {
    const p = prepare(query);
    // RFC 8484 4.1: use id 0 so HTTP caches can share answers.
    writeId(p.bytes, 0);
    const budget = Math.min(this.timeoutMs, opts.timeoutMs ?? Infinity);
    const timeout = AbortSignal.timeout(budget);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const body = Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.length);
    let res: Dispatcher.ResponseData;
    const { request } = undici();
    try {
      res = await request(this.url, {
        method: 'POST',
        headers: { 'content-type': DNS_MESSAGE, accept: DNS_MESSAGE },
        body,
        signal,
        ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
      });
    } catch (err) {
      throw this.mapError(err, timeout, opts.signal);
    }
    try {
      if (res.statusCode !== 200) {
        throw new DnsError('SLUICE_DNS_HTTP_STATUS', `${this.name}: HTTP ${res.statusCode}`);
      }
      const ct = String(res.headers['content-type'] ?? '');
      if (!ct.toLowerCase().startsWith(DNS_MESSAGE)) {
        throw new DnsError('SLUICE_DNS_BAD_RESPONSE', `${this.name}: content-type ${JSON.stringify(ct)}, expected ${DNS_MESSAGE}`);
      }
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of res.body) {
        total += (chunk as Buffer).length;
        if (total > 65535) throw new DnsError('SLUICE_DNS_BAD_RESPONSE', `${this.name}: answer longer than 65535 bytes`);
        chunks.push(chunk as Buffer);
      }
      const answer = new Uint8Array(total);
      let o = 0;
      for (const c of chunks) {
        answer.set(c, o);
        o += c.length;
      }
      // RFC 8484 4.2.1: the id may be anything but we sent 0; match the question.
      if (!answerMatches(answer, p.question, null)) throw new DnsError('SLUICE_DNS_BAD_RESPONSE', `${this.name}: answer does not match the question`);
      writeId(answer, p.originalId);
      return answer;
    } catch (err) {
      res.body.destroy();
      throw this.mapError(err, timeout, opts.signal);
    }
  }

  /** Destroys the dispatcher given to this resolver (its keep-alive connections); undici's global one is left alone. */
  async close(): Promise<void> {
    await this.dispatcher?.destroy().catch(() => {});
  }

  private mapError(err: unknown, timeout: AbortSignal, outer: AbortSignal | undefined): DnsError {
    if (err instanceof DnsError) return err;
    if (outer?.aborted) return new DnsError('SLUICE_DNS_ABORTED', `${this.name}: aborted`, { cause: err });
    if (timeout.aborted) return new DnsError('SLUICE_DNS_TIMEOUT', `${this.name}: no answer in time`, { cause: err });
    const cause = (err as { cause?: unknown } | null)?.cause;
    return toDnsError(cause ?? err, this.name);
  }
}

// ---------------------------------------------------------------------------
// Construction from config addresses

export interface ResolverFactoryOptions {
  timeoutMs?: number;
  retries?: number;
  createUdpSocket?: (family: 4 | 6) => Promise<dgram.Socket>;
  connect?: (host: string, port: number) => Promise<Duplex>;
  dispatcher?: Dispatcher;
}

/**
 * A resolver for a config upstream address: "udp://IP[:port]",
 * "tcp://IP[:port]", "https://host/path". UDP upstreams fall back to TCP on
 * the same server for truncated answers.
 */
export function createResolver(address: string, o: ResolverFactoryOptions = {}): Resolver {
  let u: URL;
  try {
    u = new URL(address);
  } catch {
    throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `dns.upstreams: address does not parse: ${JSON.stringify(address)} (expected udp://IP:53, tcp://IP:53 or https://host/dns-query)`);
  }
  if (u.protocol === 'https:' || u.protocol === 'http:') {
    return new DohResolver({ url: address, name: address, ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}), ...(o.dispatcher ? { dispatcher: o.dispatcher } : {}) });
  }
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const port = u.port === '' ? 53 : Number(u.port);
  if (isIP(host) === 0) throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `dns.upstreams: ${address}: host must be an IP literal`);
  const tcp = new TcpResolver({ host, port, name: `tcp://${formatHostPort(host, port)}`, ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}), ...(o.connect ? { connect: o.connect } : {}) });
  if (u.protocol === 'tcp:') return tcp;
  if (u.protocol !== 'udp:') throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', `dns.upstreams: ${address}: scheme must be udp, tcp or https`);
  return new UdpResolver({
    host,
    port,
    name: address,
    tcpFallback: tcp,
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    ...(o.retries !== undefined ? { retries: o.retries } : {}),
    ...(o.createUdpSocket ? { createUdpSocket: o.createUdpSocket } : {}),
  });
}

// ---------------------------------------------------------------------------
// Chain

export interface ResolverChainOptions {
  resolvers: readonly Resolver[];
  /** Budget per upstream attempt, default 2000 ms. */
  attemptTimeoutMs?: number;
  /** Budget for the whole chain, default 5000 ms; an attempt running when it expires is cut short. */
  deadlineMs?: number;
  /** Answers with these rcodes move on to the next upstream; default SERVFAIL, REFUSED. */
  failoverRcodes?: readonly number[];
  /** Called for every failed attempt (not for queries aborted by the caller or close()), with the upstream's name and why. */
  onFailure?: (upstream: string, reason: string) => void;
}

export interface UpstreamStats {
  name: string;
  ok: number;
  errors: Partial<Record<DnsErrorCode, number>>;
}

export interface ChainQueryOptions {
  signal?: AbortSignal;
}

export class ResolverChain {
  private readonly resolvers: readonly Resolver[];
  private readonly attemptTimeoutMs: number;
  private readonly deadlineMs: number;
  private readonly failoverRcodes: readonly number[];
  private readonly counters: UpstreamStats[];
  private readonly onFailure: ((upstream: string, reason: string) => void) | null;
  /** Aborted by close(): every query in flight ends at once (sluice is stopping). */
  private readonly closing = new AbortController();

  constructor(o: ResolverChainOptions) {
    if (o.resolvers.length === 0) throw new DnsError('SLUICE_DNS_BAD_ARGUMENT', 'dns.upstreams: at least one upstream is required');
    this.resolvers = o.resolvers;
    this.attemptTimeoutMs = o.attemptTimeoutMs ?? 2000;
    this.deadlineMs = o.deadlineMs ?? 5000;
    this.failoverRcodes = o.failoverRcodes ?? [DnsRcode.ServFail, DnsRcode.Refused];
    this.counters = o.resolvers.map((r) => ({ name: r.name, ok: 0, errors: {} }));
    this.onFailure = o.onFailure ?? null;
  }

  private failed(r: Resolver, reason: string): void {
    if (this.onFailure === null) return;
    try {
      this.onFailure(r.name, reason.startsWith(`${r.name}: `) ? reason.slice(r.name.length + 2) : reason);
    } catch {
      // a logger's failure is not the query's
    }
  }

  private count(i: number, code: DnsErrorCode): void {
    const e = this.counters[i]!.errors;
    e[code] = (e[code] ?? 0) + 1;
  }

  /**
   * The first good answer from the upstreams in order. An answer with a
   * failover rcode is remembered and returned only if nothing better comes.
   */
  async query(query: Uint8Array, opts: ChainQueryOptions = {}): Promise<Uint8Array> {
    if (this.closing.signal.aborted) throw new DnsError('SLUICE_DNS_ABORTED', 'DNS resolver closed');
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.deadlineMs);
    const signal = AbortSignal.any(opts.signal ? [opts.signal, deadline.signal, this.closing.signal] : [deadline.signal, this.closing.signal]);
    let fallback: Uint8Array | null = null;
    const failures: string[] = [];
    try {
      for (let i = 0; i < this.resolvers.length && !deadline.signal.aborted; i++) {
        if (opts.signal?.aborted || this.closing.signal.aborted) throw new DnsError('SLUICE_DNS_ABORTED', 'DNS query aborted');
        const r = this.resolvers[i]!;
        try {
          const answer = await r.query(query, { signal, timeoutMs: this.attemptTimeoutMs });
          const rcode = answer[3]! & 0xf;
          if (this.failoverRcodes.includes(rcode)) {
            this.count(i, 'SLUICE_DNS_UPSTREAM_RCODE');
            failures.push(`${r.name}: rcode ${rcode}`);
            this.failed(r, `answered rcode ${rcode === DnsRcode.ServFail ? 'SERVFAIL' : rcode === DnsRcode.Refused ? 'REFUSED' : rcode}`);
            fallback = answer;
            continue;
          }
          this.counters[i]!.ok++;
          return answer;
        } catch (err) {
          const e = toDnsError(err, r.name);
          if (e.code === 'SLUICE_DNS_BAD_ARGUMENT') throw e;
          if (opts.signal?.aborted || this.closing.signal.aborted) throw e;
          if (deadline.signal.aborted) {
            this.count(i, 'SLUICE_DNS_DEADLINE');
            failures.push(`${r.name}: chain deadline of ${this.deadlineMs} ms`);
            this.failed(r, `no answer before the chain deadline of ${this.deadlineMs} ms`);
            break;
          }
          this.count(i, e.code);
          failures.push(e.message);
          this.failed(r, e.message);
        }
      }
    } finally {
      clearTimeout(timer);
    }
    if (fallback !== null) return fallback;
    throw new DnsError('SLUICE_DNS_ALL_UPSTREAMS_FAILED', `all DNS upstreams failed: ${failures.join('; ')}`);
  }

  stats(): UpstreamStats[] {
    return this.counters.map((c) => ({ name: c.name, ok: c.ok, errors: { ...c.errors } }));
  }

  /** Aborts the queries in flight, refuses new ones and closes the resolvers (their dispatchers). */
  async close(): Promise<void> {
    this.closing.abort();
    await Promise.allSettled(this.resolvers.map((r) => r.close?.()));
  }
}
