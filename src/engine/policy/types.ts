/**
 * The slice of the sluice configuration the policy reads (`rules`, `ruleSets`,
 * `final`, the outbound names), as a local structural type matching the shared
 * contract in src/config/types.ts, plus the per-flow match context.
 *
 * The compiler takes `unknown` values for everything that came from YAML and
 * validates them itself, so these types describe the accepted shape; they do
 * not promise it has been checked.
 */

export type Network = 'tcp' | 'udp';
export type Inbound = 'tun' | 'tproxy';
export type SniffedProtocol = 'tls' | 'http' | 'quic' | 'dns';

/** One rule (or and/or/not sub-rule). Keys are ANDed; items of one list are ORed. */
export interface RuleInput {
  ipCidr?: string[];
  sourceCidr?: string[];
  domain?: string[];
  domainSuffix?: string[];
  domainKeyword?: string[];
  domainRegex?: string[];
  port?: (number | string)[];
  sourcePort?: (number | string)[];
  network?: Network | Network[];
  inbound?: Inbound | Inbound[];
  protocol?: SniffedProtocol | SniffedProtocol[];
  ruleSet?: string[];
  /** Owner of the client socket (flows from this machine only): uid, executable file name, executable path. */
  uid?: (number | string)[];
  processName?: string[];
  processPath?: string[];
  and?: RuleInput[];
  or?: RuleInput[];
  not?: RuleInput;
  /** Required on top-level rules, forbidden on sub-rules. */
  outbound?: string;
}

/**
 * A rule set after the config layer loaded it: `entries` holds the lines
 * (comments and blank lines may still be present; they are skipped). `path`
 * is only used to name the file in error messages.
 */
export interface RuleSetInput {
  type: 'domain' | 'cidr';
  path?: string;
  entries?: string[];
}

export interface PolicyInput {
  rules?: RuleInput[];
  ruleSets?: Record<string, RuleSetInput>;
  final: string;
  /** When present, every `outbound` and `final` must name one of these. */
  outbounds?: { name: string }[];
}

/**
 * What the engine knows about a flow when it asks for a route. `dst`/`src`
 * are 4 bytes for family 4 and 16 for family 6; an IPv4-mapped IPv6 address
 * is matched as IPv6 (the engine unmaps before asking if it wants otherwise).
 * `domain` is the sniffed SNI / Host / fake-IP name, in any case, with or
 * without a trailing dot, or null when unknown.
 */
export interface MatchContext {
  network: Network;
  inbound: Inbound;
  family: 4 | 6;
  dst: Uint8Array;
  dstPort: number;
  src: Uint8Array;
  srcPort: number;
  domain: string | null;
  protocol: SniffedProtocol | null;
  /**
   * The owner of the client's socket, when the flow comes from this machine
   * and a rule asked for it (src/system/socket-owner.ts); absent or null
   * when unknown, and then uid / processName / processPath never hold.
   */
  uid?: number | null;
  /** The executable's file name (basename of /proc/PID/exe, else /proc/PID/comm). */
  process?: string | null;
  /** The executable's absolute path (/proc/PID/exe). */
  processPath?: string | null;
}

/** Frozen and shared: `match()` returns one of a fixed set of these and never allocates. */
export interface MatchResult {
  /** Index into `rules`, or -1 when `final` applied. */
  readonly ruleIndex: number;
  readonly outbound: string;
}

export interface Explanation extends MatchResult {
  /** `rules[2] ipCidr=[203.0.113.0/24] port=[443] -> corp`, or `final -> direct`. */
  readonly description: string;
}
