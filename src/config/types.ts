/**
 * The configuration as the rest of sluice sees it: what `loadConfig` returns
 * after validation, with every optional field filled in. Rule matcher keys
 * are the one exception: an absent matcher means "no condition on this
 * property", so they stay optional.
 *
 * The YAML shape is documented key by key in docs/configuration.md.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent';
export type LogFormat = 'auto' | 'json' | 'pretty';

export interface LogConfig {
  level: LogLevel;
  /** auto: pretty on a terminal, JSON otherwise. */
  format: LogFormat;
}

export interface TunConfig {
  name: string;
  mtu: number;
  /** Ask the kernel for GSO/GRO super-packets (virtio-net header) on the TUN. */
  offload: boolean;
  /**
   * IFF_MULTI_QUEUE queues, each served by its own worker thread with its
   * own stack (src/workers/); 1 is the single-threaded path. "auto" (the
   * default, issue 10): the cores available (os.availableParallelism()),
   * so a machine with one core runs the single-threaded path.
   */
  queues: number | 'auto';
  /** The TUN's own IPv4 address with prefix, e.g. "198.19.0.1/30". */
  ipv4: string;
  /** The TUN's own IPv6 address with prefix, e.g. "fdfe:dcba:9876::1/126". */
  ipv6: string;
}

export interface SniffConfig {
  /** How long to wait for a client's first bytes (TLS ClientHello, HTTP request) before routing without them. */
  timeoutMs: number;
  /** The most bytes buffered while sniffing. */
  maxBytes: number;
}

/**
 * `icmp:`: what echo requests (ping) from the TUN side get.
 * - echo `forward`: per policy: a destination whose outbound is `direct`
 *   is pinged for real from this host (src/ip/echo-relay.ts); `reject`
 *   answers admin-prohibited, `drop` stays silent, and an outbound that
 *   cannot carry ICMP (socks5, http) gets `unforwardable`;
 * - `reply`: every request answered here (sluice's old behaviour: a ping
 *   says only that sluice is up);
 * - `unreachable`: every request answered admin-prohibited;
 * - `drop`: silence.
 */
export interface IcmpConfig {
  echo: 'forward' | 'reply' | 'unreachable' | 'drop';
  unforwardable: 'unreachable' | 'drop' | 'reply';
}

/**
 * SYN-flood and dial limits (docs/configuration.md "limits"): what a client
 * sending SYNs can make sluice hold and do.
 */
export interface LimitsConfig {
  /** SYNs waiting for a decision (usually their upstream dial) at once; the pending SYN table's cap. */
  pendingSyns: number;
  /** Half-open flows from which new SYNs get stateless SYN-cookie answers (RFC 4987), dialled only once the handshake completes. 0: always. */
  synCookieThreshold: number;
  /** Upstream dials in progress at once, all clients together. */
  dials: number;
  /** Upstream dials in progress at once for one client address. */
  dialsPerSource: number;
  /**
   * MiB of TCP buffer memory (the userspace stack's send and receive rings,
   * all flows and queues together) past which send rings stop growing
   * (src/tcp/buffer-budget.ts): like Linux's tcp_mem, soft.
   */
  tcpBufferMiB: number;
}

/** RFC 4787 5 filtering behaviours (mapping is always endpoint-independent, REQ-1). */
export type UdpNatMode = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent';

/** UDP sessions and NAT (docs/configuration.md "udp"). */
export interface UdpConfig {
  /** Which new sources may reach a client through its mapping (RFC 4787 REQ-8). */
  nat: UdpNatMode;
  /** Seconds without a datagram either way before a session ends (RFC 4787 REQ-5: at least 120 by default). */
  idleTimeout: number;
  /** Concurrent UDP sessions through the TUN; datagrams that would open more are dropped and counted. */
  maxSessions: number;
}

export type DnsMode = 'fake-ip' | 'real-ip';

export interface FakeIpConfig {
  /** IPv4 block fake answers are drawn from; network form (no host bits). */
  ipv4Range: string;
  ipv6Range: string;
  /** File the name<->address table is saved to across restarts; null keeps it in memory only. */
  persistPath: string | null;
  /** TTL (seconds) of fake answers. */
  ttl: number;
  /**
   * Names answered with their real addresses instead of fake ones (any
   * condition matching: domain, domainSuffix, domainKeyword, domainRegex,
   * ruleSet, and/or/not). Empty: every A/AAAA name gets a fake address.
   */
  filter: DnsCondition[];
}

/** The domain conditions of a main rule, as dns.rules and dns.fakeIp.filter use them. */
export interface DnsCondition {
  domain?: string[];
  domainSuffix?: string[];
  domainKeyword?: string[];
  domainRegex?: string[];
  ruleSet?: string[];
  and?: DnsCondition[];
  or?: DnsCondition[];
  not?: DnsCondition;
}

export interface DnsRuleConfig extends DnsCondition {
  /** A name of dns.groups, or "default" for dns.upstreams. */
  upstream: string;
}

export interface DnsUpstream {
  /** udp://IP[:port], tcp://IP[:port] or https://host[:port]/path (RFC 8484). */
  address: string;
  /** Outbound the query travels through. */
  outbound: string;
}

export interface DnsCacheConfig {
  /** 0 disables the cache. */
  maxEntries: number;
  minTtl: number;
  maxTtl: number;
}

export interface DnsConfig {
  mode: DnsMode;
  /** Answer UDP/TCP port 53 arriving in the TUN. */
  hijack: boolean;
  fakeIp: FakeIpConfig;
  /** Tried in order. */
  upstreams: DnsUpstream[];
  /**
   * Plain DNS servers (udp:// or tcp://, IP literals) that resolve the host
   * names of DoH upstreams, through the direct outbound's marked sockets.
   * Empty: the plain upstreams of `upstreams` that go direct do it.
   */
  bootstrap: string[];
  /**
   * A hosts(5) file consulted first for the host names of DoH upstreams
   * (re-read when it changes); null: only dns.bootstrap / plain upstreams.
   */
  hostsFile: string | null;
  /** Named upstream groups for dns.rules; each is tried in order like dns.upstreams. */
  groups: Record<string, DnsUpstream[]>;
  /** Ordered; the first rule matching the query name picks its upstream group; no match: dns.upstreams. */
  rules: DnsRuleConfig[];
  cache: DnsCacheConfig;
}

export interface DirectOutbound {
  name: string;
  type: 'direct';
  /** SO_MARK put on the outgoing sockets (so policy routing keeps them out of the TUN); null for none. */
  mark: number | null;
  /** SO_BINDTODEVICE interface; null for none. */
  interface: string | null;
}

export interface Socks5Outbound {
  name: string;
  type: 'socks5';
  server: string;
  port: number;
  /** RFC 1929 credentials; both null for no authentication. */
  username: string | null;
  password: string | null;
  /** Relay UDP with UDP ASSOCIATE (RFC 1928 7). */
  udp: boolean;
}

export interface HttpOutbound {
  name: string;
  type: 'http';
  server: string;
  port: number;
  /** Basic proxy credentials (RFC 9110 11.7.1); both null for none. */
  username: string | null;
  password: string | null;
}

/** Refuses the flow: TCP RST, ICMP port unreachable for UDP. */
export interface RejectOutbound {
  name: string;
  type: 'reject';
}

/** Silently discards the flow. */
export interface DropOutbound {
  name: string;
  type: 'drop';
}

export type GroupType = 'select' | 'urltest' | 'fallback' | 'loadbalance';

/** How a group measures its members (docs/configuration.md, "Outbound groups"). */
export interface GroupCheckConfig {
  /** Fetched with an HTTP GET through each member: a response head within `timeout` means alive, its time is the delay. */
  url: string;
  /** Seconds between checks. */
  interval: number;
  /** Milliseconds a check may take. */
  timeout: number;
  /** urltest: milliseconds a member must beat the current one by before the group switches. */
  tolerance: number;
  /** Checks only while the group carries flows (the first flow after an idle spell starts one). */
  lazy: boolean;
}

/**
 * An outbound group: a name rules can route to, standing for one of its
 * member outbounds (which may be groups too) picked per flow by `type`.
 */
export interface GroupOutbound {
  name: string;
  type: GroupType;
  /** Member outbound names, in order. */
  outbounds: string[];
  check: GroupCheckConfig;
  /** select: the member chosen when no choice was stored; null: the first. */
  default: string | null;
  /** loadbalance: consistent-hash (by destination) or round-robin. */
  strategy: 'consistent-hash' | 'round-robin';
}

export type OutboundConfig = DirectOutbound | Socks5Outbound | HttpOutbound | RejectOutbound | DropOutbound | GroupOutbound;
export const GROUP_TYPES: readonly GroupType[] = ['select', 'urltest', 'fallback', 'loadbalance'];

export function isGroupConfig(o: OutboundConfig): o is GroupOutbound {
  return (GROUP_TYPES as readonly string[]).includes(o.type);
}

export function defaultGroupCheck(): GroupCheckConfig {
  return { url: 'http://www.gstatic.com/generate_204', interval: 300, timeout: 5000, tolerance: 50, lazy: true };
}
export type OutboundType = OutboundConfig['type'];

/** mixed: domain entries and `cidr:` entries together (what Clash classical and sing-box rule sets convert to). */
export type RuleSetType = 'domain' | 'cidr' | 'mixed';

/** How a rule-set source is written: sluice's own lines, a Clash rule provider, a sing-box rule-set source. */
export type RuleSetFormat = 'sluice' | 'clash' | 'sing-box';
export type ClashBehavior = 'domain' | 'ipcidr' | 'classical';

export interface RuleSetConfig {
  /** What the entries are (given for the sluice format, derived from the file for the others). */
  type: RuleSetType;
  format: RuleSetFormat;
  /** Clash rule providers: how the file's lines read. */
  behavior: ClashBehavior | null;
  /**
   * Absolute path of the rule-set file; for a `url` set, where the last
   * good download is kept (null: beside the state file, filled in by
   * `sluice run`); null for an inline set.
   */
  path: string | null;
  /** Downloaded from here (http:// or https://) through `outbound`, every `interval` seconds. */
  url: string | null;
  interval: number;
  outbound: string;
  /**
   * The entries, normalised (domains lower-cased): the inline list, or the
   * file's entries as read at load time (a url set: none until `sluice run`
   * reads its disk copy or downloads it).
   */
  entries: string[];
}

/** `geoip:`: the country database `geoip` rule conditions read. */
export interface GeoIpConfig {
  /** Absolute path of a MaxMind DB (GeoLite2-Country or compatible); null: no geoip rules. */
  database: string | null;
}

/** A port 1-65535, or a string "443" or range "8000-8100" (inclusive). */
export type PortSpec = number | string;
export type Network = 'tcp' | 'udp';
export type Inbound = 'tun' | 'tproxy';
export type Protocol = 'tls' | 'http' | 'quic' | 'dns';

/**
 * Conditions of a rule. Keys are ANDed; the items of one list are ORed.
 * Domain strings are lower-cased by the loader.
 */
export interface RuleCondition {
  ipCidr?: string[];
  sourceCidr?: string[];
  domain?: string[];
  domainSuffix?: string[];
  domainKeyword?: string[];
  domainRegex?: string[];
  port?: PortSpec[];
  sourcePort?: PortSpec[];
  network?: Network;
  inbound?: Inbound;
  protocol?: Protocol[];
  ruleSet?: string[];
  /**
   * The owner of the client socket, for flows from this machine
   * (workstation mode); never true for gateway / TPROXY flows.
   */
  uid?: number[];
  /** Executable file names (basename of /proc/PID/exe), exact and case-sensitive. */
  processName?: string[];
  /** Absolute executable paths (/proc/PID/exe), exact. */
  processPath?: string[];
  /** Destination country (ISO 3166-1 alpha-2, upper-cased by the loader), from geoip.database. */
  geoip?: string[];
  and?: RuleCondition[];
  or?: RuleCondition[];
  not?: RuleCondition;
}

export interface RuleConfig extends RuleCondition {
  outbound: string;
}

/**
 * One rule of the HTTP L7 mode. Conditions are ANDed (an absent one is no
 * condition); the first rule whose conditions all hold applies to the request.
 */
export interface HttpRuleConfig {
  /** Request methods, upper-case (RFC 9110 9); any of them. */
  method?: string[];
  /** The request path (without the query) starts with this. */
  pathPrefix?: string;
  /** The request target (path and query) matches this regular expression. */
  pathRegex?: string;
  /** Host header suffixes, lower-cased ("example.com" also matches "a.example.com"). */
  host?: string[];
  /** Outbound for the request; null keeps the flow's outbound (chosen by `rules`). */
  outbound: string | null;
  /** Request headers set (replacing any the client sent). */
  setHeaders: Record<string, string>;
  /** Request header names removed, lower-cased. */
  removeHeaders: string[];
}

/** The optional L7 mode for cleartext HTTP/1.1 flows (docs/configuration.md, "http"). */
export interface HttpConfig {
  enabled: boolean;
  /** Destination ports whose sniffed-HTTP flows are parsed request by request. */
  ports: number[];
  /** Ordered; the first match wins; no match keeps the flow's outbound. */
  rules: HttpRuleConfig[];
  /** One "request" log line per request at info. */
  accessLog: boolean;
  /** Largest request head (request line plus headers) accepted; larger gets 431. */
  maxHeaderBytes: number;
}

/**
 * Workstation auto-route (`route:`): what `sluice run` installs so this
 * machine's own traffic enters the TUN, and removes again on exit.
 */
export interface RouteConfig {
  /** Install the routes, rules and (with strictDns) the nftables table below. */
  auto: boolean;
  /** Routing table holding the `include` routes via the TUN (not 253, 254 or 255). */
  table: number;
  /** Priority of `not fwmark MARK lookup TABLE`; the exclude rules sit at priority - 1. */
  priority: number;
  /** fwmark sluice's own sockets carry so they keep using the main table; direct outbounds without a mark get it. */
  mark: number;
  /** Prefixes routed into the TUN. */
  include: string[];
  /** Prefixes that keep using the main table (rules `to PREFIX lookup main`). */
  exclude: string[];
  /** Drop DNS (UDP/TCP port 53) that neither goes to the TUN (or lo) nor carries the mark (nftables table `inet sluice`). */
  strictDns: boolean;
  /**
   * Fail closed: unreachable routes in `table` (and, in tproxy gateway mode,
   * a forward-chain reject) that refuse the steered traffic once sluice is
   * gone instead of letting it fall through to the main table; removed by a
   * clean stop or `sluice down`.
   */
  killSwitch: boolean;
  /**
   * With `auto`: add the prefixes of detected Docker and libvirt bridges,
   * WireGuard interfaces and Tailscale (src/system/coexistence.ts) to
   * `exclude`, so they keep their own routes instead of entering the TUN.
   */
  excludeDetected: boolean;
  /**
   * With `auto`: destinations the policy sends direct by address (src/system/kernel-path.ts)
   * skip the TUN: nftables marks them in the output path so the routing rules leave them to
   * the main table. Fake-IP ranges and everything else still enter the TUN.
   */
  kernelPath: boolean;
}

/**
 * The eBPF TC classifier (`classifier:`): decides per packet, on the named
 * interfaces, which flows enter the TUN (marked `tunMark`, routed by
 * `ip rule fwmark tunMark lookup route.table`) and which take the kernel path.
 * The prefix table is computed from `rules` (src/system/classifier-policy.ts).
 */
export interface ClassifierSectionConfig {
  enabled: boolean;
  /** Interfaces the classifier is attached to (the LAN side of a gateway). */
  interfaces: string[];
  direction: 'ingress' | 'egress';
  /** fwmark put on packets bound for the TUN; must differ from route.mark. */
  tunMark: number;
  /** Prefixes that always take the kernel path. */
  bypass: string[];
  /** Action for destinations no prefix covers; null: computed from the policy. */
  default: 'tun' | 'kernel' | null;
  /** The in-kernel SNI / Host filter on kernel-path TCP/443 and TCP/80 (bpf/sni.h): names of reject/drop domain rules are reset. */
  sni: boolean;
}

/** How a gateway steers the LAN's forwarded traffic into sluice (docs/configuration.md, "gateway"). */
export type GatewayMode = 'tun' | 'tproxy' | 'tproxy-ebpf';

/**
 * Gateway mode (`gateway:`): sluice proxies the traffic other machines on
 * the `lan` interfaces send through this one, and removes everything it
 * installed on exit.
 */
export interface GatewayConfig {
  enabled: boolean;
  /** Interfaces the LAN's traffic arrives on. */
  lan: string[];
  /** tun: policy-route it into the TUN; tproxy: nftables TPROXY to IP_TRANSPARENT listeners; tproxy-ebpf: the same listeners fed by a TC program with bpf_sk_assign. */
  mode: GatewayMode;
  /** Port of the TPROXY listeners (tproxy mode). */
  tproxyPort: number;
  /** fwmark of TPROXY'd packets (and replies to preserveSource sockets), routed to local delivery. */
  tproxyMark: number;
  /** Direct outbound connections leave with the LAN client's address as their source (IP_TRANSPARENT). */
  preserveSource: boolean;
  /** Cap on concurrent TPROXY UDP sessions (tproxy mode); datagrams that would open more are dropped and counted. */
  tproxyUdpSessions: number;
}

/**
 * Who `sluice run` runs as once set-up is done (`run:`): it starts as root,
 * opens the TUN and installs its routing state, then gives up root for this
 * user, keeping only the capabilities new flows and teardown need
 * (src/system/privileges.ts).
 */
export interface RunConfig {
  /** User name or numeric uid to switch to after set-up; null stays root. */
  user: string | null;
  /** Group name or numeric gid; null: the user's primary group. */
  group: string | null;
}

/**
 * The control API (`api:`, src/control/): the Clash/mihomo-compatible REST
 * and WebSocket routes dashboards use, plus sluice's own under /v1/.
 */
export interface ApiConfig {
  /** "host:port", "[v6]:port" or an absolute unix socket path; null: no API. */
  listen: string | null;
  /** The Bearer token; null: read (or at first start generate) `secretFile`. */
  secret: string | null;
  /** Where the generated secret is kept (mode 0600); null: `api-secret` beside the state file. */
  secretFile: string | null;
}

/**
 * Prometheus metrics (`metrics:`, src/control/metrics.ts). `/metrics` is
 * always served on the API (with its auth); `listen` adds a listener of
 * its own that serves only `/metrics`, without auth (it carries counts, no
 * addresses or names).
 */
export interface MetricsConfig {
  /** "host:port", "[v6]:port" or an absolute unix socket path; null: only on the API. */
  listen: string | null;
}

export interface SluiceConfig {
  log: LogConfig;
  tun: TunConfig;
  sniff: SniffConfig;
  icmp: IcmpConfig;
  limits: LimitsConfig;
  udp: UdpConfig;
  dns: DnsConfig;
  outbounds: OutboundConfig[];
  ruleSets: Record<string, RuleSetConfig>;
  geoip: GeoIpConfig;
  /** Ordered; the first match wins. */
  rules: RuleConfig[];
  /** Outbound used when no rule matches. */
  final: string;
  /** Workstation auto-route; off unless `route.auto` is true. */
  route: RouteConfig;
  http: HttpConfig;
  /** eBPF classifier; off unless `classifier.enabled` is true. */
  classifier: ClassifierSectionConfig;
  /** Gateway mode; off unless `gateway.enabled` is true. */
  gateway: GatewayConfig;
  /** Privilege drop after set-up; off unless `run.user` is set. */
  run: RunConfig;
  /** The control API; on by default at 127.0.0.1:9090. */
  api: ApiConfig;
  /** Prometheus metrics: on the API, and on metrics.listen when set. */
  metrics: MetricsConfig;
}

/** Every matcher key a rule or sub-rule may carry, in documentation order. */
export const MATCHER_KEYS = [
  'ipCidr',
  'sourceCidr',
  'domain',
  'domainSuffix',
  'domainKeyword',
  'domainRegex',
  'port',
  'sourcePort',
  'network',
  'inbound',
  'protocol',
  'ruleSet',
  'uid',
  'processName',
  'processPath',
  'geoip',
  'and',
  'or',
  'not',
] as const;

/**
 * The built-in policy (`sluice run` without --config, and the base every
 * omitted key falls back to): everything direct, DNS hijacked and answered
 * with fake IPs, a cache, every flow logged at info.
 *
 * Address choices: the fake-IP pool and the TUN address both come from the
 * RFC 2544 benchmarking block 198.18.0.0/15, which is never routed on the
 * Internet, but from different halves so they cannot overlap: fake IPs from
 * 198.18.0.0/16, the TUN is 198.19.0.1/30. IPv6 uses one RFC 4193 ULA /48,
 * fdfe:dcba:9876::/48: the TUN is fdfe:dcba:9876::1/126 and fake IPs come from
 * fdfe:dcba:9876:1::/96 (2^32 addresses, so a pool offset fits in 32 bits).
 */
export function defaultConfig(): SluiceConfig {
  return {
    log: { level: 'info', format: 'auto' },
    tun: { name: 'sluice0', mtu: 1500, offload: true, queues: 'auto', ipv4: '198.19.0.1/30', ipv6: 'fdfe:dcba:9876::1/126' },
    sniff: { timeoutMs: 300, maxBytes: 8192 },
    icmp: { echo: 'forward', unforwardable: 'unreachable' },
    limits: { pendingSyns: 1024, synCookieThreshold: 128, dials: 512, dialsPerSource: 64, tcpBufferMiB: 128 },
    udp: { nat: 'endpoint-independent', idleTimeout: 300, maxSessions: 16384 },
    dns: {
      mode: 'fake-ip',
      hijack: true,
      fakeIp: {
        ipv4Range: '198.18.0.0/16',
        ipv6Range: 'fdfe:dcba:9876:1::/96',
        persistPath: '/var/lib/sluice/fakeip.json',
        ttl: 1,
        filter: [],
      },
      upstreams: [
        { address: 'udp://1.1.1.1:53', outbound: 'direct' },
        { address: 'udp://9.9.9.9:53', outbound: 'direct' },
      ],
      cache: { maxEntries: 4096, minTtl: 0, maxTtl: 86400 },
      bootstrap: [],
      hostsFile: '/etc/hosts',
      groups: {},
      rules: [],
    },
    outbounds: [{ name: 'direct', type: 'direct', mark: null, interface: null }],
    ruleSets: {},
    geoip: { database: null },
    rules: [],
    final: 'direct',
    route: {
      auto: false,
      table: 2022,
      priority: 9000,
      mark: 0x162,
      include: ['0.0.0.0/0', '::/0'],
      exclude: [],
      strictDns: false,
      killSwitch: true,
      excludeDetected: true,
      kernelPath: false,
    },
    http: { enabled: false, ports: [80], rules: [], accessLog: true, maxHeaderBytes: 16384 },
    classifier: { enabled: false, interfaces: [], direction: 'ingress', tunMark: 0x164, bypass: [], default: null, sni: false },
    gateway: { enabled: false, lan: [], mode: 'tun', tproxyPort: 7893, tproxyMark: 0x163, preserveSource: false, tproxyUdpSessions: 16384 },
    run: { user: null, group: null },
    api: { listen: '127.0.0.1:9090', secret: null, secretFile: null },
    metrics: { listen: null },
  };
}
