/**
 * The groups of one outbound set, as the control plane sees them: list,
 * inspect, choose a select group's member, measure delays. This is the
 * interface the API's Clash routes (/proxies, PUT /proxies/:name,
 * /proxies/:name/delay, /group/:name/delay) call; the engine hands out the
 * registry of the running configuration (`Engine.groups`), a new one after
 * each reload.
 */
import { GroupError, OutboundGroup, type GroupInfo } from './group.js';
import { checkThrough, type CheckResult } from './group-health.js';
import type { Outbound } from './types.js';

export interface OutboundInfo {
  name: string;
  type: Outbound['type'];
  /** Present for groups. */
  group?: GroupInfo;
}

export class GroupRegistry {
  constructor(private readonly outbounds: ReadonlyMap<string, Outbound>) {}

  /** Every outbound, groups with their state. */
  list(): OutboundInfo[] {
    return [...this.outbounds.values()].map((o) => this.describe(o));
  }

  /** One outbound by name, or undefined. */
  get(name: string): OutboundInfo | undefined {
    const o = this.outbounds.get(name);
    return o === undefined ? undefined : this.describe(o);
  }

  /** The groups only. */
  groups(): GroupInfo[] {
    const out: GroupInfo[] = [];
    for (const o of this.outbounds.values()) if (o instanceof OutboundGroup) out.push(o.info());
    return out;
  }

  /** Chooses `member` in select group `group` for new flows (persisted). Throws GroupError. */
  select(group: string, member: string): void {
    this.group(group).select(member);
  }

  /**
   * Measures `url` through outbound `name`: a leaf outbound or a group (its
   * current pick). With `group` set, `name` is a member of that group and
   * the result is recorded in the group's health.
   */
  async delay(name: string, url: string, timeoutMs: number, group?: string): Promise<CheckResult> {
    if (group !== undefined) return this.group(group).delay(name, url, timeoutMs);
    const o = this.outbounds.get(name);
    if (o === undefined) throw new GroupError('SLUICE_GROUP_UNKNOWN', `no outbound named ${JSON.stringify(name)}`);
    return checkThrough(o, url, timeoutMs);
  }

  /**
   * Records a check through `member` made by someone else (the API's delay
   * tests): in group `group` only when given, else in every group that has
   * `member` as a direct member, since they share its health (as mihomo's
   * proxies share their alive state). Returns how many groups took it.
   */
  record(member: string, r: CheckResult, group?: string): number {
    let n = 0;
    for (const o of this.outbounds.values()) {
      if (!(o instanceof OutboundGroup) || (group !== undefined && o.name !== group)) continue;
      if (o.record(member, r)) n++;
    }
    return n;
  }

  /** Checks every member of group `name` now; results by member. */
  groupDelay(name: string, url?: string, timeoutMs?: number): Promise<Record<string, CheckResult>> {
    return this.group(name).checkAll(url, timeoutMs);
  }

  /** Starts every group's health checks. */
  start(): void {
    for (const o of this.outbounds.values()) if (o instanceof OutboundGroup) o.start();
  }

  /** Stops every group's health checks. */
  close(): void {
    for (const o of this.outbounds.values()) if (o instanceof OutboundGroup) o.close();
  }

  private group(name: string): OutboundGroup {
    const o = this.outbounds.get(name);
    if (!(o instanceof OutboundGroup)) throw new GroupError('SLUICE_GROUP_UNKNOWN', o === undefined ? `no outbound named ${JSON.stringify(name)}` : `${name} is not a group`);
    return o;
  }

  private describe(o: Outbound): OutboundInfo {
    return o instanceof OutboundGroup ? { name: o.name, type: o.type, group: o.info() } : { name: o.name, type: o.type };
  }
}
