/**
 * Outbound groups (`select`, `urltest`, `fallback`, `loadbalance`): one
 * outbound name standing for its members, picked per flow
 * (group-strategy.ts), kept healthy by checks through each member
 * (group-health.ts), a select's choice kept across restarts
 * (group-store.ts).
 *
 * A dial failure marks the member dead at once and the flow goes on to the
 * next member of the order (live ones first), so a flow never waits on a
 * dead member while a live one exists; a later successful dial or check
 * brings it back. select dials only its chosen member: that is the point of
 * choosing.
 *
 * The chain a flow took (group -> member -> ... -> leaf outbound) is
 * recorded against the stream or association it returns; `chainOf` reads
 * it for the flow log and the flow registry.
 */
import { SluiceError } from '../errors.js';
import type { Duplex } from 'node:stream';
import { OutboundError, OutboundErrorCode } from './errors.js';
import { GroupHealth, checkThrough, type CheckResult } from './group-health.js';
import { consistentHashOrder, fallbackOrder, roundRobinOrder, urltestOrder, urltestPick, type MemberHealth } from './group-strategy.js';
import type { SelectionStore } from './group-store.js';
import type { OpenUdpOptions, Outbound, OutboundAction, Target, UdpAssociation } from './types.js';

export type GroupKind = 'select' | 'urltest' | 'fallback' | 'loadbalance';

export interface GroupSettings {
  name: string;
  type: GroupKind;
  check: { url: string; interval: number; timeout: number; tolerance: number; lazy: boolean };
  default: string | null;
  strategy: 'consistent-hash' | 'round-robin';
}

/** What a group tells its owner (the engine logs these). */
export interface GroupEvents {
  memberState?(group: string, member: string, alive: boolean, reason: string): void;
  switched?(group: string, from: string, to: string, why: string): void;
  storeError?(message: string): void;
}

/** A group as the control plane shows it (Clash's /proxies entry). */
export interface GroupInfo {
  name: string;
  type: GroupKind;
  /** The member new flows go to now (loadbalance: the first live one). */
  now: string;
  members: { name: string; alive: boolean; delayMs: number | null; checkedAt: number | null }[];
}

const chains = new WeakMap<object, readonly string[]>();
/** Dial errors that are the destination's answer through a working member (never a reason to mark it dead). */
const destinationErrors = new WeakSet<object>();

/**
 * Whether a dial error is the destination's answer rather than the member
 * failing: a proxy's refusal reply (SOCKS REP, HTTP status), a direct
 * member's connection refused (the destination's RST), or such an answer
 * passed up from a nested group.
 */
function destinationAnswered(err: unknown, member: Outbound): boolean {
  if (typeof err !== 'object' || err === null) return false;
  if (destinationErrors.has(err)) return true;
  if (!(err instanceof OutboundError)) return false;
  return err.code === OutboundErrorCode.PROXY_REFUSED || (member.type === 'direct' && err.code === OutboundErrorCode.REFUSED);
}

/** The chain of outbound names a group stream or association went through, or undefined for a plain outbound's. */
export function chainOf(x: object): readonly string[] | undefined {
  return chains.get(x);
}

interface Member extends MemberHealth {
  outbound: Outbound;
  checkedAt: number | null;
}

export class OutboundGroup implements Outbound {
  readonly name: string;
  readonly type: GroupKind;
  readonly supportsUdp: boolean;
  private readonly settings: GroupSettings;
  private readonly members: Member[];
  private readonly names: string[];
  private readonly health: GroupHealth | null;
  private readonly store: SelectionStore | null;
  private readonly events: GroupEvents;
  /** select: the chosen member; urltest: the current pick. */
  private current: number;
  private rr = 0;

  constructor(settings: GroupSettings, members: readonly Outbound[], store: SelectionStore | null, events: GroupEvents = {}) {
    if (members.length === 0) throw new Error(`group ${settings.name}: no members`);
    this.name = settings.name;
    this.type = settings.type;
    this.settings = settings;
    this.members = members.map((outbound) => ({ outbound, alive: true, delayMs: null, checkedAt: null }));
    this.names = members.map((m) => m.name);
    this.supportsUdp = members.some((m) => m.supportsUdp);
    this.store = store;
    this.events = events;
    this.current = 0;
    if (settings.type === 'select') {
      const first = store?.initial(settings.name, this.names, settings.default) ?? settings.default ?? this.names[0]!;
      this.current = Math.max(0, this.names.indexOf(first));
      // A default new or edited since the stored choice is a choice too (made in the file, applied by start or reload).
      if (store !== null && settings.default !== null && store.get(settings.name)?.configDefault !== settings.default) {
        if (!store.set(settings.name, first, settings.default)) events.storeError?.(store.lastError ?? 'cannot save');
      }
    }
    this.health =
      settings.type === 'select'
        ? null
        : new GroupHealth({ members, check: settings.check, onResult: (i, r) => this.onCheck(i, r) });
  }

  /** Starts the health checks (called once the engine runs). */
  start(): void {
    this.health?.start();
  }

  /** Stops the health checks; flows already dialled are not touched, and the group still dials. */
  close(): void {
    this.health?.close();
  }

  /** select and urltest: what the current member does with flows (a select pointing at reject rejects). */
  get action(): OutboundAction {
    if (this.type === 'select') return this.members[this.current]!.outbound.action;
    if (this.type === 'urltest') return this.members[this.pick()]!.outbound.action;
    return 'connect';
  }

  get memberNames(): readonly string[] {
    return this.names;
  }

  info(): GroupInfo {
    const order = this.order('');
    return {
      name: this.name,
      type: this.type,
      now: this.names[this.type === 'select' ? this.current : order[0]!]!,
      members: this.members.map((m, i) => ({ name: this.names[i]!, alive: m.alive, delayMs: m.delayMs, checkedAt: m.checkedAt })),
    };
  }

  /** select: choose `member` for new flows (persisted). Throws on a non-select group or an unknown member. */
  select(member: string): void {
    if (this.type !== 'select') throw new GroupError('SLUICE_GROUP_NOT_SELECT', `group ${this.name} is a ${this.type} group; only select groups take a choice`);
    const i = this.names.indexOf(member);
    if (i < 0) throw new GroupError('SLUICE_GROUP_NO_MEMBER', `group ${this.name} has no member ${JSON.stringify(member)} (members: ${this.names.join(', ')})`);
    const from = this.names[this.current]!;
    this.current = i;
    if (this.store !== null && !this.store.set(this.name, member, this.settings.default)) this.events.storeError?.(this.store.lastError ?? 'cannot save');
    if (from !== member) this.events.switched?.(this.name, from, member, 'selected');
  }

  /** One check of `url` (default: the group's) through member `member`, recorded like a periodic check. */
  async delay(member: string, url?: string, timeoutMs?: number): Promise<CheckResult> {
    const i = this.names.indexOf(member);
    if (i < 0) throw new GroupError('SLUICE_GROUP_NO_MEMBER', `group ${this.name} has no member ${JSON.stringify(member)}`);
    const r = await checkThrough(this.members[i]!.outbound, url ?? this.settings.check.url, timeoutMs ?? this.settings.check.timeout);
    this.onCheck(i, r);
    return r;
  }

  /**
   * A check made elsewhere (the control API's delay test) through member
   * `member`, recorded as if the group had made it: it can mark the member
   * alive or dead and move a urltest pick. False when `member` is not one.
   */
  record(member: string, r: CheckResult): boolean {
    const i = this.names.indexOf(member);
    if (i < 0) return false;
    this.onCheck(i, r);
    return true;
  }

  /** Checks every member now (Clash's /group/:name/delay). */
  async checkAll(url?: string, timeoutMs?: number): Promise<Record<string, CheckResult>> {
    const out: Record<string, CheckResult> = {};
    await Promise.all(this.names.map(async (n) => (out[n] = await this.delay(n, url, timeoutMs))));
    return out;
  }

  /** The member a new flow to `key` (the destination host) would try first: what an echo request to it follows. */
  firstMember(key: string): Outbound {
    return this.members[this.order(key)[0] ?? 0]!.outbound;
  }

  connectTcp(target: Target, signal?: AbortSignal): Promise<Duplex> {
    return this.dial(target.host, signal, (m) => m.outbound.connectTcp(target, signal));
  }

  openUdp(options: OpenUdpOptions, signal?: AbortSignal): Promise<UdpAssociation> {
    return this.dial('', signal, (m) => {
      const o = m.outbound;
      if (!o.supportsUdp || o.openUdp === undefined) {
        return Promise.reject(new OutboundError(OutboundErrorCode.UNSUPPORTED, 'carries no UDP', { outbound: o.name }));
      }
      return o.openUdp(options, signal);
    });
  }

  private async dial<T extends object>(key: string, signal: AbortSignal | undefined, attempt: (m: Member) => Promise<T>): Promise<T> {
    this.health?.touch();
    const order = this.order(key);
    let last: unknown = null;
    for (const i of order) {
      const m = this.members[i]!;
      if (m.outbound.action !== 'connect') {
        // A reject/drop member ends the flow the way it would on its own.
        return attempt(m);
      }
      try {
        const r = await attempt(m);
        if (!m.alive) this.setAlive(i, true, 'dial succeeded');
        chains.set(r, [this.name, ...(chainOf(r) ?? [m.outbound.name])]);
        return r;
      } catch (err) {
        last = err;
        const code = err instanceof OutboundError ? err.code : null;
        if (code === OutboundErrorCode.UNSUPPORTED) continue; // e.g. UDP through a TCP-only member
        if (signal?.aborted || code === OutboundErrorCode.ABORTED) throw err;
        if (destinationAnswered(err, m.outbound)) {
          // The member works: the destination said no. Another member would hear the same.
          destinationErrors.add(err as object);
          throw err;
        }
        if (m.alive) this.setAlive(i, false, `dial failed: ${(err as Error).message}`);
        if (this.type === 'select') break;
      }
    }
    if (last instanceof OutboundError) {
      throw new OutboundError(last.code, `every member failed; last: ${last.message}`, {
        outbound: this.name,
        ...(last.errno !== undefined ? { errno: last.errno } : {}),
        ...(last.replyCode !== undefined ? { replyCode: last.replyCode } : {}),
        ...(last.status !== undefined ? { status: last.status } : {}),
        cause: last,
      });
    }
    throw last ?? new OutboundError(OutboundErrorCode.UNSUPPORTED, 'no member can carry this flow', { outbound: this.name });
  }

  /** The dial order for a flow to `key` (the destination host). */
  private order(key: string): number[] {
    switch (this.type) {
      case 'select':
        return [this.current];
      case 'fallback':
        return fallbackOrder(this.members);
      case 'urltest':
        return urltestOrder(this.members, this.pick());
      case 'loadbalance':
        return this.settings.strategy === 'round-robin' ? roundRobinOrder(this.members, this.rr++ % this.members.length) : consistentHashOrder(this.members, this.names, key);
    }
  }

  private pick(): number {
    const next = urltestPick(this.members, this.current, this.settings.check.tolerance);
    if (next !== this.current) {
      const from = this.names[this.current]!;
      this.current = next;
      this.events.switched?.(this.name, from, this.names[next]!, `delay ${this.members[next]!.delayMs ?? '?'} ms`);
    }
    return next;
  }

  private onCheck(i: number, r: CheckResult): void {
    const m = this.members[i]!;
    m.checkedAt = Date.now();
    if (r.ok) m.delayMs = r.delayMs;
    if (m.alive !== r.ok) this.setAlive(i, r.ok, r.ok ? `check ok in ${r.delayMs} ms` : `check failed: ${r.error}`);
    if (this.type === 'urltest') this.pick();
  }

  private setAlive(i: number, alive: boolean, reason: string): void {
    const m = this.members[i]!;
    m.alive = alive;
    if (!alive) m.delayMs = null;
    this.events.memberState?.(this.name, this.names[i]!, alive, reason);
  }
}

export class GroupError extends SluiceError {
  override readonly name = 'GroupError';
  constructor(
    readonly code: 'SLUICE_GROUP_NOT_SELECT' | 'SLUICE_GROUP_NO_MEMBER' | 'SLUICE_GROUP_UNKNOWN',
    message: string,
  ) {
    super(message);
  }
}
