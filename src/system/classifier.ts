/**
 * The eBPF TC classifier (bpf/classifier.c) from TypeScript: load it, attach
 * it to interfaces, fill its longest-prefix tries and port set with
 * actions, change them live (no detach), and read its per-action counters.
 *
 * Actions: 'kernel' (the fast path, untouched), 'tun' (marked with the TUN
 * mark: policy routing sends it into sluice's TUN), 'tproxy' (marked for
 * the nftables TPROXY rule), 'drop'.
 */
import { SluiceError } from '../errors.js';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../link/native.js';
import { parseIpv4Text, writeIpv4Addr } from '../wire/ipv4.js';
import { parseIpv6Text } from '../wire/ipv6.js';

export type ClassifierAction = 'kernel' | 'tun' | 'tproxy' | 'drop';
const ACTIONS: readonly ClassifierAction[] = ['kernel', 'tun', 'tproxy', 'drop'];

export interface ClassifierConfig {
  defaultAction: ClassifierAction;
  tunMark: number;
  tproxyMark: number;
  /**
   * 'tproxy' packets are handed to the transparent listeners on this port
   * by bpf_sk_assign (gateway.mode tproxy-ebpf) instead of only being
   * marked for the nftables tproxy rule; null or absent: mark only.
   */
  assignPort?: number | null;
  /** The SNI / Host filter on kernel-path TCP (classifier.sni; bpf/sni.h). */
  sni?: boolean;
}

/** SNI filter counters (bpf/sni.h enum sni_counter), in map order. */
export const SNI_COUNTERS = ['tlsAllowed', 'tlsBlocked', 'tlsUnseen', 'httpAllowed', 'httpBlocked', 'httpUnseen', 'quicUnseen', 'resets', 'serverResets'] as const;
export type SniCounter = (typeof SNI_COUNTERS)[number];

/** Deny map value bits (bpf/sni.h). */
export const DENY_EXACT = 1;
export const DENY_SUFFIX = 2;
export const DENY_SUB = 4;

/**
 * The deny map's key for a name: 64-bit FNV-1a over the lower-cased name
 * read from its last byte to its first (so the program, scanning the same
 * way, meets the hash of every parent domain at each dot); a trailing dot
 * is dropped. Little-endian u64 bytes.
 */
export function denyKey(name: string): Uint8Array {
  let n = name.toLowerCase();
  if (n.length > 1 && n.endsWith('.')) n = n.slice(0, -1);
  const bytes = new TextEncoder().encode(n);
  let h = 0xcbf29ce484222325n;
  for (let i = bytes.length - 1; i >= 0; i--) {
    h ^= BigInt(bytes[i]!);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  const key = new Uint8Array(8);
  new DataView(key.buffer).setBigUint64(0, h, true);
  return key;
}

/** Outcomes of socket assignment (bpf/classifier.c enum assign_result), in map order. */
export const ASSIGN_RESULTS = ['listener', 'flow', 'local', 'noListener', 'assignFailed', 'unsupported'] as const;
export type AssignResult = (typeof ASSIGN_RESULTS)[number];

export interface ActionCounters {
  packets: number;
  bytes: number;
}

export class ClassifierError extends SluiceError {
  readonly code = 'SLUICE_CLASSIFIER';
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** bpf/classifier.o, built by `npm run build:bpf` (part of npm ci). */
export const CLASSIFIER_OBJECT = path.resolve(here, '../../../bpf/classifier.o');

function actionCode(a: ClassifierAction, field: string): number {
  const i = ACTIONS.indexOf(a);
  if (i < 0) throw new ClassifierError(`${field}: unknown action ${JSON.stringify(a)} (expected ${ACTIONS.join(', ')})`);
  return i;
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

/** LPM trie key: u32 prefix length (host order) then the address bytes. */
function prefixKey(cidr: string): { family: 4 | 6; key: Uint8Array } {
  const slash = cidr.indexOf('/');
  const addr = slash < 0 ? cidr : cidr.slice(0, slash);
  const v6 = addr.includes(':');
  const bits = slash < 0 ? (v6 ? 128 : 32) : Number(cidr.slice(slash + 1));
  const max = v6 ? 128 : 32;
  if (!Number.isInteger(bits) || bits < 0 || bits > max) throw new ClassifierError(`${cidr}: prefix length must be 0..${max}`);
  const key = new Uint8Array(4 + (v6 ? 16 : 4));
  new DataView(key.buffer).setUint32(0, bits, true);
  if (v6) {
    if (!parseIpv6Text(addr, key, 4)) throw new ClassifierError(`${cidr}: not an IPv6 prefix`);
  } else {
    const v = parseIpv4Text(addr);
    if (v === null) throw new ClassifierError(`${cidr}: not an IPv4 prefix`);
    writeIpv4Addr(key, 4, v);
  }
  return { family: v6 ? 6 : 4, key };
}

export class TcClassifier {
  private readonly native = loadNative();
  private readonly prog: number;
  private readonly maps: Record<string, number>;
  private readonly attached: { ifindex: number; ingress: boolean; createdQdisc: boolean }[] = [];
  private readonly cpus: number;
  private closed = false;

  private constructor(objectPath: string) {
    if (!existsSync(objectPath)) throw new ClassifierError(`${objectPath}: the classifier object is missing (npm run build:bpf needs clang)`);
    const loaded = this.native.bpfLoad(objectPath);
    this.prog = loaded.prog;
    this.maps = loaded.maps;
    for (const m of ['sluice_v4', 'sluice_v6', 'sluice_ports', 'sluice_config', 'sluice_counters', 'sluice_assign', 'sluice_deny', 'sluice_sni']) {
      if (this.maps[m] === undefined) throw new ClassifierError(`${objectPath}: map ${m} missing`);
    }
    this.cpus = this.native.bpfPossibleCpus();
  }

  /** Loads the classifier; throws a ClassifierError or the addon's errno error (e.g. EPERM) when eBPF is unavailable. */
  static load(config: ClassifierConfig, objectPath = CLASSIFIER_OBJECT): TcClassifier {
    const c = new TcClassifier(objectPath);
    c.configure(config);
    return c;
  }

  configure(config: ClassifierConfig): void {
    const value = new Uint8Array(24);
    const dv = new DataView(value.buffer);
    const port = config.assignPort ?? null;
    if (port !== null && (!Number.isInteger(port) || port < 1 || port > 65535)) throw new ClassifierError(`assignPort ${port}: expected 1..65535`);
    dv.setUint32(0, actionCode(config.defaultAction, 'defaultAction'), true);
    dv.setUint32(4, config.tunMark >>> 0, true);
    dv.setUint32(8, config.tproxyMark >>> 0, true);
    dv.setUint32(12, (port !== null ? 1 : 0) | (config.sni === true ? 2 : 0), true); // FLAG_SK_ASSIGN | FLAG_SNI
    dv.setUint32(16, port ?? 0, true);
    this.native.bpfMapUpdate(this.maps.sluice_config!, u32(0), value);
  }

  /** Attaches at the interface's clsact ingress (traffic arriving from a LAN) or egress. */
  attach(ifname: string, direction: 'ingress' | 'egress' = 'ingress'): void {
    const ifindex = this.native.linkIndex(ifname);
    const ingress = direction === 'ingress';
    const createdQdisc = this.native.bpfTcAttach(ifindex, this.prog, ingress);
    this.attached.push({ ifindex, ingress, createdQdisc });
  }

  /** Sets (or replaces, live) the action for a prefix. */
  setPrefix(cidr: string, action: ClassifierAction): void {
    const { family, key } = prefixKey(cidr);
    this.native.bpfMapUpdate(family === 4 ? this.maps.sluice_v4! : this.maps.sluice_v6!, key, u32(actionCode(action, cidr)));
  }

  deletePrefix(cidr: string): boolean {
    const { family, key } = prefixKey(cidr);
    return this.native.bpfMapDelete(family === 4 ? this.maps.sluice_v4! : this.maps.sluice_v6!, key);
  }

  /** The action for TCP or UDP to a destination port (used when no prefix matches). */
  setPort(protocol: 'tcp' | 'udp', port: number, action: ClassifierAction): void {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ClassifierError(`port ${port}: expected 0..65535`);
    this.native.bpfMapUpdate(this.maps.sluice_ports!, u32(((protocol === 'tcp' ? 6 : 17) << 16) | port), u32(actionCode(action, `${protocol}/${port}`)));
  }

  deletePort(protocol: 'tcp' | 'udp', port: number): boolean {
    return this.native.bpfMapDelete(this.maps.sluice_ports!, u32(((protocol === 'tcp' ? 6 : 17) << 16) | port));
  }

  /** Packets and bytes per action, summed over CPUs. */
  counters(): Record<ClassifierAction, ActionCounters> {
    const out = {} as Record<ClassifierAction, ActionCounters>;
    const buf = new Uint8Array(16 * this.cpus);
    const dv = new DataView(buf.buffer);
    ACTIONS.forEach((a, i) => {
      buf.fill(0);
      this.native.bpfMapLookup(this.maps.sluice_counters!, u32(i), buf);
      let packets = 0;
      let bytes = 0;
      for (let c = 0; c < this.cpus; c++) {
        packets += Number(dv.getBigUint64(c * 16, true));
        bytes += Number(dv.getBigUint64(c * 16 + 8, true));
      }
      out[a] = { packets, bytes };
    });
    return out;
  }

  /** Denies a name (DENY_EXACT: the name itself; DENY_SUFFIX: it and every name under it), live. */
  setDeny(name: string, bits: number): void {
    this.native.bpfMapUpdate(this.maps.sluice_deny!, denyKey(name), u32(bits));
  }

  deleteDeny(name: string): boolean {
    return this.native.bpfMapDelete(this.maps.sluice_deny!, denyKey(name));
  }

  /** SNI / Host filter counters, summed over CPUs. */
  sniCounters(): Record<SniCounter, number> {
    return this.perCpuU64(this.maps.sluice_sni!, SNI_COUNTERS);
  }

  private perCpuU64<K extends string>(fd: number, names: readonly K[]): Record<K, number> {
    const out = {} as Record<K, number>;
    const buf = new Uint8Array(8 * this.cpus);
    const dv = new DataView(buf.buffer);
    names.forEach((r, i) => {
      buf.fill(0);
      this.native.bpfMapLookup(fd, u32(i), buf);
      let n = 0;
      for (let c = 0; c < this.cpus; c++) n += Number(dv.getBigUint64(c * 8, true));
      out[r] = n;
    });
    return out;
  }

  /** Socket-assignment outcomes (tproxy-ebpf), packets summed over CPUs. */
  assignCounters(): Record<AssignResult, number> {
    const out = {} as Record<AssignResult, number>;
    const buf = new Uint8Array(8 * this.cpus);
    const dv = new DataView(buf.buffer);
    ASSIGN_RESULTS.forEach((r, i) => {
      buf.fill(0);
      this.native.bpfMapLookup(this.maps.sluice_assign!, u32(i), buf);
      let n = 0;
      for (let c = 0; c < this.cpus; c++) n += Number(dv.getBigUint64(c * 8, true));
      out[r] = n;
    });
    return out;
  }

  /** Detaches from every interface (removing clsact where we created it) and closes the descriptors. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.attached.splice(0)) this.native.bpfTcDetach(a.ifindex, a.ingress, a.createdQdisc);
    this.native.closeFd(this.prog);
    for (const fd of Object.values(this.maps)) this.native.closeFd(fd);
  }
}
