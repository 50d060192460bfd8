/**
 * Who opened a flow's client socket, for the uid / processName / processPath
 * rule conditions (workstation mode: flows from this machine).
 *
 *  1. NETLINK_SOCK_DIAG with the exact 4-tuple (native socketOwner,
 *     native/src/sockdiag.c) gives the socket's uid and inode. The client's
 *     socket as the kernel holds it: local = the source address and port the
 *     TUN sees, remote = the destination it sees (a fake IP stays a fake IP:
 *     nothing rewrites addresses between the socket and the TUN).
 *  2. The process holding `socket:[INODE]` among /proc/PID/fd, then
 *     /proc/PID/exe (the path, " (deleted)" cut) and its file name; when
 *     exe cannot be read, /proc/PID/comm (15 characters at most).
 *
 * Costs are kept off the packet path: the engine asks only when the compiled
 * policy has an owner rule, once per new flow (at the SYN, or the first
 * datagram of a UDP session), and the /proc walk yields to the event loop
 * every few hundred links, newest process first. One process's fd links
 * are read synchronously: a synchronous readlink costs a few microseconds
 * of the main thread, an asynchronous one several times that in thread-pool
 * round trips (bench/socket-owner.bench.ts). Results
 * are cached by 4-tuple and by inode (bounded, short TTL: a 4-tuple is only
 * reused after the socket is gone), and the processes that owned recent
 * sockets are searched first, so a browser's hundredth connection costs a
 * few readlinks, not a walk of every process.
 *
 * Without permission to read another user's /proc/PID/fd (sluice dropped to
 * run.user without CAP_SYS_PTRACE) the uid is still known; the process is
 * then null and processName / processPath rules do not hold.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { basename } from 'node:path';

export interface SocketOwner {
  uid: number;
  /** null when no process holding the socket was found (gone already, or not readable). */
  pid: number | null;
  /** The executable's file name (or comm), null with pid. */
  process: string | null;
  processPath: string | null;
}

/** The native call (SluiceNative.socketOwner), injectable for tests without the addon. */
export type SockDiagFn = (protocol: 'tcp' | 'udp', family: 4 | 6, local: Uint8Array, localPort: number, remote: Uint8Array, remotePort: number) => { uid: number; inode: number } | null;

export interface SocketOwnerOptions {
  sockDiag: SockDiagFn;
  /** Default /proc (tests point it elsewhere). */
  procRoot?: string;
  /** Milliseconds clock; default Date.now. */
  now?: () => number;
  /** Cached 4-tuples and inodes, each (default 4096). */
  maxEntries?: number;
  /** How long an answer is reused (default 2000 ms). */
  ttlMs?: number;
}

export interface SocketOwnerStats {
  lookups: number;
  cacheHits: number;
  /** No socket with that 4-tuple (it closed, or the flow is not from this machine). */
  notFound: number;
  /** A socket whose process was not found. */
  noProcess: number;
  /** /proc directories read by walks. */
  procScanned: number;
  errors: number;
}

interface Cached {
  at: number;
  owner: SocketOwner | null;
}

/** Processes remembered as recent socket owners (searched first). */
const HOT_PIDS = 32;
/** fd links read between two yields to the event loop during a /proc walk (about 1 ms). */
const LINKS_PER_TURN = 256;

export class SocketOwnerLookup {
  readonly stats: SocketOwnerStats = { lookups: 0, cacheHits: 0, notFound: 0, noProcess: 0, procScanned: 0, errors: 0 };
  private readonly sockDiag: SockDiagFn;
  private readonly proc: string;
  private readonly now: () => number;
  private readonly max: number;
  private readonly ttl: number;
  private readonly byTuple = new Map<string, Cached>();
  private readonly byInode = new Map<number, Cached>();
  private readonly inflight = new Map<number, Promise<SocketOwner>>();
  /** Most recent last. */
  private hot: number[] = [];
  /** fd links read since the walk last yielded to the event loop. */
  private sinceYield = 0;

  constructor(o: SocketOwnerOptions) {
    this.sockDiag = o.sockDiag;
    this.proc = o.procRoot ?? '/proc';
    this.now = o.now ?? Date.now;
    this.max = o.maxEntries ?? 4096;
    this.ttl = o.ttlMs ?? 2000;
  }

  /**
   * The owner of the socket whose local end is local:localPort and remote
   * end remote:remotePort (addresses as 4 or 16 bytes), or null when this
   * host has no such socket. Never rejects.
   */
  async lookup(protocol: 'tcp' | 'udp', family: 4 | 6, local: Uint8Array, localPort: number, remote: Uint8Array, remotePort: number): Promise<SocketOwner | null> {
    this.stats.lookups++;
    const key = `${protocol}${family} ${Buffer.from(local).toString('hex')}:${localPort} ${Buffer.from(remote).toString('hex')}:${remotePort}`;
    const t = this.now();
    const c = this.byTuple.get(key);
    if (c !== undefined && t - c.at < this.ttl) {
      this.stats.cacheHits++;
      return c.owner;
    }
    let owner: SocketOwner | null;
    try {
      owner = await this.resolve(protocol, family, local, localPort, remote, remotePort, t);
    } catch {
      this.stats.errors++;
      owner = null;
    }
    put(this.byTuple, key, { at: t, owner }, this.max);
    return owner;
  }

  private async resolve(protocol: 'tcp' | 'udp', family: 4 | 6, local: Uint8Array, localPort: number, remote: Uint8Array, remotePort: number, t: number): Promise<SocketOwner | null> {
    const sock = this.sockDiag(protocol, family, local, localPort, remote, remotePort);
    if (sock === null) {
      this.stats.notFound++;
      return null;
    }
    const c = this.byInode.get(sock.inode);
    if (c !== undefined && t - c.at < this.ttl && c.owner !== null) return c.owner;
    let p = this.inflight.get(sock.inode);
    if (p === undefined) {
      p = this.findProcess(sock.uid, sock.inode);
      this.inflight.set(sock.inode, p);
      const pp = p;
      void pp.finally(() => {
        if (this.inflight.get(sock.inode) === pp) this.inflight.delete(sock.inode);
      });
    }
    const owner = await p;
    if (owner.pid === null) this.stats.noProcess++;
    put(this.byInode, sock.inode, { at: t, owner }, this.max);
    return owner;
  }

  private async findProcess(uid: number, inode: number): Promise<SocketOwner> {
    const target = `socket:[${inode}]`;
    const tried = new Set<number>();
    const hot = this.hot.slice(); // holds() may drop dead ones from this.hot
    for (let i = hot.length - 1; i >= 0; i--) {
      const pid = hot[i]!;
      tried.add(pid);
      if (await this.holds(pid, target)) return this.describe(uid, pid);
    }
    let entries: string[];
    try {
      entries = await readdir(this.proc);
    } catch {
      return { uid, pid: null, process: null, processPath: null };
    }
    const pids: number[] = [];
    for (const e of entries) {
      const c0 = e.charCodeAt(0);
      if (c0 < 48 || c0 > 57) continue;
      const pid = Number(e);
      if (Number.isInteger(pid) && !tried.has(pid) && pid !== process.pid) pids.push(pid);
    }
    // Newest first: a socket not held by a recent owner most likely belongs to
    // a process that just started (pids grow until they wrap around).
    pids.sort((a, b) => b - a);
    for (const pid of pids) if (await this.holds(pid, target)) return this.describe(uid, pid);
    return { uid, pid: null, process: null, processPath: null };
  }

  /**
   * Whether /proc/PID/fd has a link to `target`, highest fd first (a new
   * socket is often among the last opened). Unreadable or vanished
   * processes hold nothing. Yields to the event loop every LINKS_PER_TURN
   * links, inside a process with many fds too.
   */
  private async holds(pid: number, target: string): Promise<boolean> {
    this.stats.procScanned++;
    const dir = `${this.proc}/${pid}/fd`;
    let fds: string[];
    try {
      fds = readdirSync(dir);
    } catch (err) {
      // A process that is gone leaves the hot list.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.hot = this.hot.filter((p) => p !== pid);
      return false;
    }
    for (let i = fds.length - 1; i >= 0; i--) {
      if (++this.sinceYield >= LINKS_PER_TURN) {
        this.sinceYield = 0;
        await yieldToLoop();
      }
      let link: string;
      try {
        link = readlinkSync(`${dir}/${fds[i]!}`);
      } catch {
        continue; // closed meanwhile
      }
      if (link === target) return true;
    }
    return false;
  }

  private async describe(uid: number, pid: number): Promise<SocketOwner> {
    this.hot = this.hot.filter((p) => p !== pid);
    this.hot.push(pid);
    if (this.hot.length > HOT_PIDS) this.hot.shift();
    let path: string | null = await readlink(`${this.proc}/${pid}/exe`).catch(() => null);
    if (path !== null && path.endsWith(' (deleted)')) path = path.slice(0, -10);
    let name: string | null = path !== null ? basename(path) : null;
    if (name === null) name = (await readFile(`${this.proc}/${pid}/comm`, 'utf8').catch(() => '')).trim() || null;
    return { uid, pid, process: name, processPath: path };
  }
}

/** Map insert with a size bound: the oldest insertion goes first. */
function put<K, V>(m: Map<K, V>, k: K, v: V, max: number): void {
  m.delete(k);
  m.set(k, v);
  if (m.size > max) m.delete(m.keys().next().value as K);
}
