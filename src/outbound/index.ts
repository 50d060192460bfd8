/**
 * Builds outbounds from the `outbounds:` section of the configuration
 * (shape in SluiceConfig; a local structural type here so this layer does
 * not depend on the config module).
 */
import { DirectOutbound } from './direct.js';
import { OutboundConfigError } from './errors.js';
import { HttpConnectOutbound } from './http-connect.js';
import { DropOutbound, RejectOutbound } from './reject.js';
import { Socks5Outbound } from './socks5.js';
import { OutboundGroup, type GroupEvents, type GroupKind, type GroupSettings } from './group.js';
import type { SelectionStore } from './group-store.js';
import type { LookupFn, Outbound } from './types.js';

export type { Outbound, OutboundAction, OutboundType, Target, UdpAssociation, UdpSource, OpenUdpOptions, LookupFn } from './types.js';
export { OutboundError, OutboundErrorCode, OutboundConfigError } from './errors.js';
export type { ClientReaction } from './errors.js';
export { blockingReaction, RejectOutbound, DropOutbound } from './reject.js';
export { DirectOutbound } from './direct.js';
export { Socks5Outbound } from './socks5.js';
export { HttpConnectOutbound, authorityOf } from './http-connect.js';
export { OutboundGroup, GroupError, chainOf, type GroupEvents, type GroupInfo } from './group.js';
export { SelectionStore } from './group-store.js';

/** Socket options the config may give any socket-making outbound (only `direct` documents them today). */
interface DialFields {
  mark?: number;
  interface?: string;
}

export type OutboundConfig =
  | ({ name: string; type: 'direct' } & DialFields)
  | ({ name: string; type: 'socks5'; server: string; port: number; username?: string; password?: string; udp?: boolean } & DialFields)
  | ({ name: string; type: 'http'; server: string; port: number; username?: string; password?: string } & DialFields)
  | { name: string; type: 'reject' }
  | { name: string; type: 'drop' }
  | (Omit<GroupSettings, 'default'> & { default?: string; outbounds: string[] });

const GROUP_KINDS: readonly string[] = ['select', 'urltest', 'fallback', 'loadbalance'];

/** Process-wide settings that are not per-outbound config. */
export interface OutboundDefaults {
  /** Budget for establishing an upstream path, ms (default 10000). */
  connectTimeoutMs?: number;
  /** SO_MARK applied when an outbound sets none (e.g. the routing mark sluice's own sockets carry). */
  mark?: number;
  noDelay?: boolean;
  keepAliveMs?: number;
  /** Resolver for domain targets (default: the system resolver). */
  lookup?: LookupFn;
  /** Where select groups keep their choices (null or absent: in memory only). */
  selections?: SelectionStore | null;
  /** Health and choice events of the groups. */
  groupEvents?: GroupEvents;
}

/** A leaf outbound (not a group; createOutbounds builds groups). */
export function createOutbound(config: OutboundConfig, defaults: OutboundDefaults = {}): Outbound {
  const common = {
    ...(defaults.connectTimeoutMs !== undefined ? { connectTimeoutMs: defaults.connectTimeoutMs } : {}),
    ...(defaults.noDelay !== undefined ? { noDelay: defaults.noDelay } : {}),
    ...(defaults.keepAliveMs !== undefined ? { keepAliveMs: defaults.keepAliveMs } : {}),
    ...(defaults.lookup !== undefined ? { lookup: defaults.lookup } : {}),
  };
  const dial = (c: DialFields): DialFields => ({
    ...(c.mark !== undefined ? { mark: c.mark } : defaults.mark !== undefined ? { mark: defaults.mark } : {}),
    ...(c.interface !== undefined ? { interface: c.interface } : {}),
  });
  switch (config.type) {
    case 'direct':
      return new DirectOutbound({ name: config.name, ...common, ...dial(config) });
    case 'socks5':
      return new Socks5Outbound({
        name: config.name,
        server: config.server,
        port: config.port,
        ...(config.username !== undefined ? { username: config.username } : {}),
        ...(config.password !== undefined ? { password: config.password } : {}),
        ...(config.udp !== undefined ? { udp: config.udp } : {}),
        ...common,
        ...dial(config),
      });
    case 'http':
      return new HttpConnectOutbound({
        name: config.name,
        server: config.server,
        port: config.port,
        ...(config.username !== undefined ? { username: config.username } : {}),
        ...(config.password !== undefined ? { password: config.password } : {}),
        ...common,
        ...dial(config),
      });
    case 'reject':
      return new RejectOutbound(config.name);
    case 'drop':
      return new DropOutbound(config.name);
    case 'select':
    case 'urltest':
    case 'fallback':
    case 'loadbalance':
      throw new OutboundConfigError(`outbounds[${config.name}].type`, 'a group is built by createOutbounds, with its members');
    default: {
      const c = config as { name?: unknown; type?: unknown };
      throw new OutboundConfigError(`outbounds[${String(c.name)}].type`, `unknown type ${JSON.stringify(c.type)}; expected direct|socks5|http|reject|drop`);
    }
  }
}

/**
 * All outbounds by name; duplicate names are a config error. Groups are
 * built after the outbounds they name (members before the groups holding
 * them); an unknown member or a cycle throws (the config layer reports
 * both first, naming the field).
 */
export function createOutbounds(configs: readonly OutboundConfig[], defaults: OutboundDefaults = {}): Map<string, Outbound> {
  const out = new Map<string, Outbound>();
  const groups = new Map<string, { config: OutboundConfig & { outbounds: string[] }; index: number }>();
  configs.forEach((c, i) => {
    if (out.has(c.name) || groups.has(c.name)) throw new OutboundConfigError(`outbounds[${i}].name`, `duplicate outbound name ${JSON.stringify(c.name)}`);
    if (GROUP_KINDS.includes(c.type)) groups.set(c.name, { config: c as OutboundConfig & { outbounds: string[] }, index: i });
    else out.set(c.name, createOutbound(c, defaults));
  });
  const building = new Set<string>();
  const build = (name: string, path: string): Outbound => {
    const done = out.get(name);
    if (done !== undefined) return done;
    const g = groups.get(name);
    if (g === undefined) throw new OutboundConfigError(path, `no outbound named ${JSON.stringify(name)}`);
    if (building.has(name)) throw new OutboundConfigError(path, `groups form a cycle through ${JSON.stringify(name)}`);
    building.add(name);
    const c = g.config as GroupSettings & { outbounds: string[]; default?: string | null };
    const members = c.outbounds.map((m, j) => build(m, `outbounds[${g.index}].outbounds[${j}]`));
    const settings: GroupSettings = { name: c.name, type: c.type as GroupKind, check: c.check, default: c.default ?? null, strategy: c.strategy ?? 'consistent-hash' };
    const group = new OutboundGroup(settings, members, defaults.selections ?? null, defaults.groupEvents ?? {});
    building.delete(name);
    out.set(name, group);
    return group;
  };
  for (const name of groups.keys()) build(name, `outbounds[${groups.get(name)!.index}]`);
  return out;
}
