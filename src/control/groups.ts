/**
 * What the control API needs of outbound groups (select, urltest,
 * fallback, ...), as a small interface the groups code implements. Until
 * then the only group is the built-in GLOBAL selector (GlobalGroup): its
 * members are every outbound, and its choice is where mode `global` sends
 * every new flow.
 */
import type { Engine } from '../engine/engine.js';

export type GroupType = 'Selector' | 'URLTest' | 'Fallback' | 'LoadBalance' | 'Relay';

export interface ProxyGroupInfo {
  name: string;
  type: GroupType;
  /** The member in use (absent on LoadBalance and Relay). */
  now: string | null;
  /** Members in order. */
  all: string[];
  /** URLTest/Fallback: the member pinned by PUT, '' when automatic. */
  fixed?: string;
  testUrl?: string;
  hidden?: boolean;
  icon?: string;
  udp?: boolean;
}

/** Why a selection was refused: not a group, a group one cannot choose in, or no such member. */
export type SelectError = { kind: 'not-group' | 'not-selectable' | 'no-member'; message: string };

export interface ProxyGroups {
  /** Every group, in config order. */
  list(): ProxyGroupInfo[];
  /** Chooses `member` in `group` for new flows; null on success. */
  select(group: string, member: string): SelectError | null;
  /** DELETE /proxies/:name: releases a pin on URLTest/Fallback; null on success. */
  unfix?(group: string): SelectError | null;
  /** The outbound a name (a group or an outbound) leads to now, for delay tests through a group; null when unknown. */
  resolve?(name: string): string | null;
  /**
   * A delay test's result through `member` (delayMs null when it failed):
   * recorded in `group`'s health when given, else in every group with that
   * member, so a dead member found by a dashboard stops getting flows.
   */
  recordDelay?(member: string, delayMs: number | null, error: string | null, group?: string): void;
}

export const GLOBAL = 'GLOBAL';

/** The built-in GLOBAL selector over every outbound, plus the groups of `inner` when given. */
export class GlobalGroup implements ProxyGroups {
  constructor(
    private readonly engine: Engine,
    private readonly inner: ProxyGroups | null = null,
  ) {}

  list(): ProxyGroupInfo[] {
    const inner = this.inner?.list() ?? [];
    // Dashboards order their group list by position in GLOBAL.all: outbounds, then groups.
    const all = [...this.engine.outboundMap.keys(), ...inner.map((g) => g.name)];
    return [{ name: GLOBAL, type: 'Selector', now: this.engine.globalOutbound, all, udp: true, hidden: false, icon: '' }, ...inner];
  }

  select(group: string, member: string): SelectError | null {
    // null is success: `??` would turn it into an error.
    if (group !== GLOBAL) return this.inner !== null ? this.inner.select(group, member) : { kind: 'not-group', message: `${group} is not a group` };
    try {
      this.engine.selectGlobal(member);
      return null;
    } catch (err) {
      return { kind: 'no-member', message: `Selector update error: ${(err as Error).message}` };
    }
  }

  unfix(group: string): SelectError | null {
    if (group === GLOBAL) return { kind: 'not-selectable', message: 'GLOBAL is a Selector: there is no pin to release' };
    return this.inner?.unfix !== undefined ? this.inner.unfix(group) : { kind: 'not-group', message: `${group} has no pin to release` };
  }

  recordDelay(member: string, delayMs: number | null, error: string | null, group?: string): void {
    if (group === GLOBAL) return;
    this.inner?.recordDelay?.(member, delayMs, error, group);
  }

  resolve(name: string): string | null {
    if (this.engine.outboundMap.has(name)) return name;
    if (name === GLOBAL) return this.engine.globalOutbound;
    return this.inner?.resolve?.(name) ?? null;
  }
}
