/**
 * Giving up root after set-up (`run.user`, `run.group`). `sluice run`
 * starts as root, opens the TUN, installs routes, rules, nftables and tc
 * state and creates its privileged sockets (TPROXY listeners); then it
 * switches to run.user for good and keeps only the capabilities that new
 * flows and its own teardown still need:
 *
 *   - CAP_NET_ADMIN, always: SO_MARK on every upstream socket (route.mark,
 *     outbound marks), IP_TRANSPARENT for gateway.preserveSource and the
 *     TPROXY reply sockets, and teardown: the `ip`, `nft` and `tc` children
 *     get it through the ambient set, the in-process netlink calls
 *     (classifier detach, link changes) use it directly, and the forwarding
 *     sysctls are writable with it: /proc/sys/net files are root-owned 0644,
 *     but the kernel grants their owner's access to any holder of
 *     CAP_NET_ADMIN in the namespace (net/sysctl_net.c,
 *     net_ctl_permissions), so no CAP_DAC_OVERRIDE and no privileged helper
 *     process are needed. Those writes must stay synchronous
 *     (writeFileSync, as teardown.ts does): only the main thread holds the
 *     kept set, and an async write would run on a libuv threadpool thread,
 *     which holds no capabilities after the drop;
 *   - CAP_NET_RAW, only when a direct outbound names an `interface`:
 *     SO_BINDTODEVICE needed it before Linux 5.7 (and rebinding still does);
 *   - CAP_NET_BIND_SERVICE, only in gateway.mode tproxy: each UDP session's
 *     reply socket is bound to the original destination (src/udp/
 *     tproxy.ts), port 53 for DNS, and binding a port below
 *     net.ipv4.ip_unprivileged_port_start needs it even with IP_TRANSPARENT
 *     (inet_bind).
 *
 * Not kept otherwise: CAP_NET_BIND_SERVICE has no other use after set-up
 * (DNS is answered inside the userspace stack, the TPROXY listeners are
 * bound before the drop, and a SIGHUP reload never changes a listener); CAP_SETUID
 * and CAP_SETGID (the drop is final); everything else, down to the
 * bounding set.
 *
 * The files sluice still writes after the drop live in two directories: the
 * state file's (--state, rewritten and removed at stop) and the fake-IP
 * table's (dns.fakeIp.persistPath, saved every minute and at stop). Both are
 * handed to run.user (chown) before the drop, but only when they are
 * sluice's own: a directory that holds other files, or a shared one like
 * /tmp, is refused with an error naming the field, never chowned. Files
 * read after the drop (rule-set files on SIGHUP) must be readable by
 * run.user.
 *
 * The native side (native/src/privileges.c) explains the per-thread nature
 * of credentials; dropPrivileges() checks the result in
 * /proc/self/task/ * /status: every thread has the new uid and gid, none
 * holds more than the kept set, and the main thread (the one that makes
 * sockets and forks the children) holds exactly the kept set, with
 * NoNewPrivs set.
 */
import { SluiceError } from '../errors.js';
import { secretPath } from '../control/secret.js';
import { accessSync, chownSync, constants, existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, parse as parsePath } from 'node:path';
import type { SluiceConfig } from '../config/types.js';
import type { Logger } from '../engine/logger.js';
import { loadNative, type SluiceNative } from '../link/native.js';

/** Capability numbers of <linux/capability.h> that sluice names. */
export const CAP = {
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
} as const;
export type CapName = keyof typeof CAP;

export class PrivilegeError extends SluiceError {
  readonly code = 'PRIVILEGE_DROP';
  constructor(message: string) {
    super(message);
    this.name = 'PrivilegeError';
  }
}

/** A directory sluice writes after the drop, and the config field that put it there. */
export interface WritableDir {
  dir: string;
  /** The file sluice keeps there (its temporary siblings share the name as a prefix). */
  file: string;
  field: string;
}

export interface PrivilegeDrop {
  user: string;
  uid: number;
  group: string;
  gid: number;
  keep: CapName[];
  /** Bits of `keep`, as capset(2) takes them. */
  keepMask: number;
  dirs: WritableDir[];
  /** Files that stay root's in those directories (the control API's generated secret: readable by root only). */
  keepRoot: string[];
}

export interface ThreadCredentials {
  tid: number;
  uid: number[];
  gid: number[];
  groups: number[];
  capInh: bigint;
  capPrm: bigint;
  capEff: bigint;
  capBnd: bigint;
  capAmb: bigint;
  noNewPrivs: boolean;
}

/** Parses the credential lines of a /proc/PID/task/TID/status text. */
export function parseStatus(tid: number, text: string): ThreadCredentials {
  const field = (name: string): string => {
    const m = new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(text);
    if (m === null) throw new PrivilegeError(`/proc status of thread ${tid} has no ${name} line`);
    return m[1]!.trim();
  };
  const ids = (name: string): number[] => field(name).split(/\s+/).filter(Boolean).map(Number);
  const hex = (name: string): bigint => BigInt(`0x${field(name)}`);
  return {
    tid,
    uid: ids('Uid'),
    gid: ids('Gid'),
    groups: ids('Groups'),
    capInh: hex('CapInh'),
    capPrm: hex('CapPrm'),
    capEff: hex('CapEff'),
    capBnd: hex('CapBnd'),
    capAmb: hex('CapAmb'),
    noNewPrivs: field('NoNewPrivs') === '1',
  };
}

/** Every thread of process `pid` (default: this one), from /proc. */
export function threadCredentials(pid: number | 'self' = 'self'): ThreadCredentials[] {
  const out: ThreadCredentials[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    out.push(parseStatus(Number(tid), text));
  }
  return out;
}

export function capMask(names: readonly CapName[]): number {
  let m = 0;
  for (const n of names) m += 2 ** CAP[n];
  return m;
}

export function capNames(mask: bigint): string[] {
  const out: string[] = [];
  for (const [name, bit] of Object.entries(CAP)) if ((mask >> BigInt(bit)) & 1n) out.push(name);
  return out;
}

/**
 * The capabilities sluice keeps for `config` (see the top of this file),
 * with `queues` TUN queues: worker threads (queues > 1) open their ICMP echo
 * sockets after the drop, at start and at each restart, and a raw ICMP
 * socket needs CAP_NET_RAW (ping sockets need net.ipv4.ping_group_range,
 * which nobody's group is not in by default).
 */
export function keptCapabilities(config: SluiceConfig, queues = 1): CapName[] {
  const keep: CapName[] = ['CAP_NET_ADMIN'];
  const bindsDevice = config.outbounds.some((o) => o.type === 'direct' && o.interface !== null);
  const workersPing = queues > 1 && config.icmp.echo === 'forward';
  if (bindsDevice || workersPing) keep.push('CAP_NET_RAW');
  if (config.gateway.enabled && config.gateway.mode !== 'tun') keep.push('CAP_NET_BIND_SERVICE');
  return keep;
}

/** Whether `name` is sluice's file in a writable directory: the file itself or one of its temporary siblings. */
function isOwnEntry(name: string, dir: WritableDir, all: readonly WritableDir[]): boolean {
  return all.some((d) => d.dir === dir.dir && (name === d.file || name.startsWith(`${d.file}.`)));
}

/**
 * Refuses a directory sluice must not hand over: a shared one (sticky or
 * world-writable, like /tmp) or one that holds files that are not sluice's.
 * A directory already owned by `uid`, or not there yet, is fine.
 */
function checkDir(d: WritableDir, all: readonly WritableDir[], plan: { user: string; uid: number; keepRoot: readonly string[] }, where: string): 'absent' | 'owned' | 'hand-over' {
  if (!existsSync(d.dir)) return 'absent';
  const st = lstatSync(d.dir);
  const shown = d.field === '--state' ? `the state file's directory ${d.dir} (--state)` : `the directory ${d.dir} of ${d.field}`;
  if (!st.isDirectory()) throw new PrivilegeError(`${where}: run.user: ${shown} is not a directory`);
  if (st.uid === plan.uid) return 'owned';
  if ((st.mode & 0o1002) !== 0) {
    throw new PrivilegeError(`${where}: run.user: ${shown} is shared (sticky or world-writable), so sluice will not hand it to ${plan.user}; give the file a directory of its own, such as /run/sluice/ or /var/lib/sluice/`);
  }
  const foreign = readdirSync(d.dir).filter((n) => !isOwnEntry(n, d, all) && !plan.keepRoot.includes(join(d.dir, n)));
  if (foreign.length > 0) {
    throw new PrivilegeError(`${where}: run.user: ${shown} holds other files (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''}); sluice hands its directory to ${plan.user} after set-up and needs one of its own, such as /run/sluice/ or /var/lib/sluice/`);
  }
  return 'hand-over';
}

/**
 * Worker threads (tun.queues > 1) load their modules after the drop when one
 * is restarted, as run.user: every directory from / down to `file` must be
 * searchable by that user, and the file readable. Throws PrivilegeError
 * naming the first directory that is not, before anything is set up.
 */
export function checkReadableBy(file: string, plan: { user: string; uid: number; gid: number }, where: string, why: string): void {
  const allowed = (mode: number, uid: number, gid: number, bits: number): boolean => {
    const shift = uid === plan.uid ? 6 : gid === plan.gid ? 3 : 0;
    return ((mode >> shift) & bits) === bits;
  };
  const chain: string[] = [];
  for (let d = dirname(file); ; d = dirname(d)) {
    chain.unshift(d);
    if (d === parsePath(d).root) break;
  }
  for (const d of chain) {
    const st = lstatSync(d);
    if (!allowed(st.mode, st.uid, st.gid, 0o1)) {
      throw new PrivilegeError(`${where}: run.user: ${plan.user} cannot search ${d} (mode ${(st.mode & 0o777).toString(8)}), and ${why}; install sluice where ${plan.user} can read it (such as /opt/sluice or /usr/lib/node_modules), or use tun.queues: 1`);
    }
  }
  const st = lstatSync(file);
  if (!allowed(st.mode, st.uid, st.gid, 0o4)) {
    throw new PrivilegeError(`${where}: run.user: ${plan.user} cannot read ${file} (mode ${(st.mode & 0o777).toString(8)}), and ${why}; make it readable by ${plan.user}, or use tun.queues: 1`);
  }
}

function effectiveCaps(): bigint {
  return parseStatus(process.pid, readFileSync('/proc/self/status', 'utf8')).capEff;
}

/**
 * run.user / run.group as this machine knows them: the user and group exist
 * (or are numeric ids) and are not root. Null when run.user is not set.
 * Throws PrivilegeError naming the field; `sluice check` reports the same
 * (src/commands/check.ts), without the checks that need root.
 */
export function resolveRunIdentity(config: SluiceConfig, where: string, native: SluiceNative = loadNative()): { user: string; uid: number; group: string; gid: number } | null {
  const { user: userSpec, group: groupSpec } = config.run;
  if (userSpec === null) return null;
  const numeric = (s: string): number | null => (/^[0-9]+$/.test(s) ? Number(s) : null);
  const uidSpec = numeric(userSpec);
  const pw = native.lookupUser(uidSpec ?? userSpec);
  if (pw === null && uidSpec === null) {
    throw new PrivilegeError(`${where}: run.user: no such user "${userSpec}"; create it (useradd --system --no-create-home --shell /usr/sbin/nologin ${userSpec}) or name an existing one such as nobody`);
  }
  const uid = pw?.uid ?? uidSpec!;
  const user = pw?.name ?? userSpec;
  if (uid === 0) throw new PrivilegeError(`${where}: run.user: "${userSpec}" is uid 0 (root); name an unprivileged user such as nobody`);
  let gid: number;
  let group: string;
  if (groupSpec !== null) {
    const gidSpec = numeric(groupSpec);
    const gr = native.lookupGroup(gidSpec ?? groupSpec);
    if (gr === null && gidSpec === null) throw new PrivilegeError(`${where}: run.group: no such group "${groupSpec}"`);
    gid = gr?.gid ?? gidSpec!;
    group = gr?.name ?? groupSpec;
  } else if (pw !== null) {
    gid = pw.gid;
    group = native.lookupGroup(gid)?.name ?? String(gid);
  } else {
    throw new PrivilegeError(`${where}: run.group: uid ${uid} has no user entry, so it has no primary group; give run.group too`);
  }
  if (gid === 0) {
    throw new PrivilegeError(`${where}: ${groupSpec !== null ? 'run.group' : 'run.user'}: the group would be gid 0 (root), which keeps root's group access; ${groupSpec !== null ? 'name another group' : 'set run.group to an unprivileged group'}`);
  }
  return { user, uid, group, gid };
}

/**
 * Resolves `run.user` / `run.group` and checks that the drop can happen,
 * before anything is opened; null when run.user is not set. Errors name the
 * field (`where` is the config file).
 */
export function planPrivilegeDrop(config: SluiceConfig, where: string, statePath: string, queues = 1, native: SluiceNative = loadNative()): PrivilegeDrop | null {
  const id = resolveRunIdentity(config, where, native);
  if (id === null) return null;
  const { user, uid, group, gid } = id;
  const keep = keptCapabilities(config, queues);
  const need = [...keep, 'CAP_SETUID', 'CAP_SETGID', 'CAP_SETPCAP'] as CapName[];
  const eff = effectiveCaps();
  const missing = need.filter((n) => ((eff >> BigInt(CAP[n])) & 1n) === 0n);
  if (missing.length > 0) {
    throw new PrivilegeError(`${where}: run.user: switching to ${user} needs ${missing.join(', ')}, which this process lacks; start sluice run as root`);
  }
  const dirs: WritableDir[] = [{ dir: dirname(statePath), file: basename(statePath), field: '--state' }];
  const persist = config.dns.fakeIp.persistPath;
  if (persist !== null) dirs.push({ dir: dirname(persist), file: basename(persist), field: 'dns.fakeIp.persistPath' });
  // The API secret is read before the switch and must stay unreadable to run.user.
  const keepRoot = config.api.listen !== null && config.api.secret === null ? [secretPath(config.api.secretFile, statePath)] : [];
  const plan: PrivilegeDrop = { user, uid, group, gid, keep, keepMask: capMask(keep), dirs, keepRoot };
  for (const d of dirs) checkDir(d, dirs, plan, where);
  return plan;
}

/**
 * Switches to the planned user now (after set-up): hands the writable
 * directories over, drops, then checks every thread in /proc. Throws
 * PrivilegeError; a failure after the uid change still leaves the main
 * thread its kept capabilities, so the caller can tear down as usual.
 */
export function dropPrivileges(plan: PrivilegeDrop, where: string, log: Logger, native: SluiceNative = loadNative()): ThreadCredentials[] {
  for (const d of plan.dirs) {
    if (checkDir(d, plan.dirs, plan, where) !== 'hand-over') continue;
    chownSync(d.dir, plan.uid, plan.gid);
    for (const name of readdirSync(d.dir)) if (!plan.keepRoot.includes(join(d.dir, name))) chownSync(join(d.dir, name), plan.uid, plan.gid);
  }
  try {
    native.dropPrivileges(plan.uid, plan.gid, [plan.gid], plan.keepMask);
  } catch (err) {
    throw new PrivilegeError(`run.user: cannot switch to ${plan.user}: ${(err as Error).message}`);
  }
  // access(2) checks with the real uid, which is now run.user's: a parent
  // directory it cannot search shows up here, not at stop.
  for (const d of plan.dirs) {
    if (!existsSync(d.dir)) continue;
    try {
      accessSync(d.dir, constants.W_OK | constants.X_OK);
    } catch {
      throw new PrivilegeError(`${where}: run.user: ${plan.user} cannot write ${d.dir} (${d.field}); make its parent directories searchable by ${plan.user}`);
    }
  }
  const want = BigInt(plan.keepMask);
  const threads = threadCredentials();
  const problems: string[] = [];
  for (const th of threads) {
    if (!th.uid.every((u) => u === plan.uid) || !th.gid.every((g) => g === plan.gid)) problems.push(`thread ${th.tid} has uid ${th.uid.join('/')} gid ${th.gid.join('/')}`);
    for (const [name, set] of [['permitted', th.capPrm], ['effective', th.capEff], ['ambient', th.capAmb]] as const) {
      if ((set & ~want) !== 0n) problems.push(`thread ${th.tid} keeps ${name} capabilities 0x${set.toString(16)}`);
    }
    if (th.tid === process.pid && (th.capPrm !== want || th.capEff !== want || th.capAmb !== want || !th.noNewPrivs)) {
      problems.push(`the main thread has permitted 0x${th.capPrm.toString(16)}, effective 0x${th.capEff.toString(16)}, ambient 0x${th.capAmb.toString(16)}, NoNewPrivs ${th.noNewPrivs ? 1 : 0} (want 0x${want.toString(16)} and 1)`);
    }
  }
  if (problems.length > 0) throw new PrivilegeError(`run.user: the drop to ${plan.user} did not take: ${problems.join('; ')}`);
  log.info({ user: plan.user, uid: plan.uid, group: plan.group, gid: plan.gid, keep: plan.keep, threads: threads.length, handedOver: plan.dirs.map((d) => d.dir) }, 'privileges dropped');
  return threads;
}
