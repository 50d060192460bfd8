/**
 * The config's outbound groups (src/outbound/group*.ts) as the control API
 * sees them (ProxyGroups, src/control/groups.ts): Clash's group types and
 * fields for /proxies, PUT /proxies/:name for select groups (the choice is
 * stored like any other), and a group resolved to the leaf outbound its
 * flows take now, for delay tests. Reads the engine's registry at every
 * call: a reload replaces it.
 */
import type { Engine } from '../engine/engine.js';
import type { GroupInfo } from '../outbound/group.js';
import { GroupError } from '../outbound/group.js';
import type { ProxyGroupInfo, ProxyGroups, SelectError } from './groups.js';

const CLASH_TYPE = { select: 'Selector', urltest: 'URLTest', fallback: 'Fallback', loadbalance: 'LoadBalance' } as const;

/** Bound on group -> group hops when resolving (the config refuses cycles; this is the backstop). */
const MAX_DEPTH = 32;

export class ConfigGroups implements ProxyGroups {
  constructor(private readonly engine: Engine) {}

  list(): ProxyGroupInfo[] {
    return this.engine.groups.groups().map((g) => this.info(g));
  }

  select(group: string, member: string): SelectError | null {
    const g = this.engine.groups.get(group);
    if (g?.group === undefined) return { kind: 'not-group', message: `${group} is not a group` };
    if (g.group.type !== 'select') return { kind: 'not-selectable', message: `${group} is a ${CLASH_TYPE[g.group.type]}: it picks its member itself` };
    try {
      this.engine.groups.select(group, member);
      return null;
    } catch (err) {
      if (err instanceof GroupError && err.code === 'SLUICE_GROUP_NO_MEMBER') return { kind: 'no-member', message: `Selector update error: ${err.message}` };
      throw err;
    }
  }

  resolve(name: string): string | null {
    let cur = name;
    for (let i = 0; i < MAX_DEPTH; i++) {
      const o = this.engine.groups.get(cur);
      if (o === undefined) return null;
      if (o.group === undefined) return cur;
      cur = o.group.now;
    }
    return null;
  }

  recordDelay(member: string, delayMs: number | null, error: string | null, group?: string): void {
    this.engine.groups.record(member, delayMs === null ? { ok: false, delayMs: null, error: error ?? 'failed' } : { ok: true, delayMs, error: null }, group);
  }

  private info(g: GroupInfo): ProxyGroupInfo {
    const reg = this.engine.groups.get(g.name);
    return {
      name: g.name,
      type: CLASH_TYPE[g.type],
      now: g.type === 'loadbalance' ? null : g.now,
      all: g.members.map((m) => m.name),
      ...(g.type !== 'select' && reg?.group !== undefined ? { testUrl: this.testUrl(g.name) } : {}),
      hidden: false,
      icon: '',
      udp: true,
    };
  }

  private testUrl(name: string): string {
    const o = this.engine.activeConfig.outbounds.find((x) => x.name === name);
    return o !== undefined && 'check' in o ? o.check.url : '';
  }
}
