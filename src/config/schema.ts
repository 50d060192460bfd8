/**
 * JSON Schema (draft 2020-12) of the YAML configuration. It checks the shape:
 * unknown keys (`additionalProperties: false` on every object), types, enums,
 * and the textual form of addresses, ports and URLs. Cross-references
 * (outbound names, rule-set names, files, overlapping ranges) are checked by
 * semantic.ts afterwards.
 *
 * `x-expected` is our own annotation: the phrase an error message uses for
 * "expected ..." at that schema location (schema-errors.ts reads it), so
 * anyOf/oneOf alternatives collapse into one sentence.
 * `default` values mirror defaultConfig() (a test keeps them in step).
 */
import { defaultConfig, defaultGroupCheck } from './types.js';

// --- Textual forms -----------------------------------------------------------

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])';
/** Dotted quad without leading zeros (which some parsers read as octal). */
export const IPV4 = `(?:${OCTET}\\.){3}${OCTET}`;

/** RFC 3986 3.2.2 IPv6address, alternative by alternative. */
const H16 = '[0-9A-Fa-f]{1,4}';
const LS32 = `(?:${H16}:${H16}|${IPV4})`;
const before = (n: number): string => (n === 0 ? `(?:${H16})?` : `(?:(?:${H16}:){0,${n}}${H16})?`);
export const IPV6 =
  '(?:' +
  [
    `(?:${H16}:){6}${LS32}`,
    `::(?:${H16}:){5}${LS32}`,
    `${before(0)}::(?:${H16}:){4}${LS32}`,
    `${before(1)}::(?:${H16}:){3}${LS32}`,
    `${before(2)}::(?:${H16}:){2}${LS32}`,
    `${before(3)}::${H16}:${LS32}`,
    `${before(4)}::${LS32}`,
    `${before(5)}::${H16}`,
    `${before(6)}::`,
  ].join('|') +
  ')';

const PREFIX4 = '(?:3[0-2]|[12]?[0-9])';
const PREFIX6 = '(?:12[0-8]|1[01][0-9]|[1-9]?[0-9])';
export const IPV4_CIDR = `${IPV4}/${PREFIX4}`;
export const IPV6_CIDR = `${IPV6}/${PREFIX6}`;

/** RFC 1123 host name; the last label starts with a letter so "300.1.2.3" is not a name. */
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const TLD = '[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
export const HOSTNAME = `(?:${LABEL}\\.)*${TLD}`;

/** A DNS name as matched by rules: labels may hold underscores (_dmarc.example.com). */
const MATCH_LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
export const DOMAIN = `${MATCH_LABEL}(?:\\.${MATCH_LABEL})*`;

export const PORT = '(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])';

/** A plain (udp/tcp, IP-literal) DNS server address: the form dns.bootstrap takes. */
const PLAIN_UPSTREAM = `(?:udp|tcp)://(?:${IPV4}|\\[${IPV6}\\])(?::${PORT})?`;

const UPSTREAM =
  `(?:(?:udp|tcp)://(?:${IPV4}|\\[${IPV6}\\])(?::${PORT})?` +
  `|https://(?:${HOSTNAME}|${IPV4}|\\[${IPV6}\\])(?::${PORT})?(?:/[!-~]*)?)`;

/** A health-check or rule-set URL. */
export const HTTP_URL = `https?://(?:${HOSTNAME}|${IPV4}|\\[${IPV6}\\])(?::${PORT})?(?:/[!-~]*)?`;

/** Outbound and rule-set names. */
export const NAME = '[A-Za-z0-9][A-Za-z0-9_.-]{0,63}';

/** A user or group name (letters, digits, _ . -, not starting with - or a digit, optional trailing $), or a numeric id. */
const ACCOUNT = '[A-Za-z_][A-Za-z0-9_.-]{0,31}\\$?|[0-9]{1,10}';

const anchored = (re: string): string => `^(?:${re})$`;

// --- Building blocks ---------------------------------------------------------

type Schema = Record<string, unknown>;

const EXPECT_CIDR = 'a CIDR such as 192.0.2.0/24';
const EXPECT_PORT = 'a port 1-65535 or a range such as "8000-8100"';

function obj(properties: Record<string, Schema>, required: string[] = [], extra: Schema = {}): Schema {
  return { type: 'object', properties, required, additionalProperties: false, ...extra };
}

function list(items: Schema, extra: Schema = {}): Schema {
  return { type: 'array', items, minItems: 1, ...extra };
}

const int = (minimum: number, maximum: number, extra: Schema = {}): Schema => ({
  type: 'integer',
  minimum,
  maximum,
  'x-expected': `a whole number from ${minimum} to ${maximum}`,
  ...extra,
});

const str = (pattern: string, expected: string, extra: Schema = {}): Schema => ({
  type: 'string',
  pattern: anchored(pattern),
  'x-expected': expected,
  ...extra,
});

const enumOf = (values: readonly string[], extra: Schema = {}): Schema => ({ enum: [...values], ...extra });

const d = defaultConfig();

const matcherProperties: Record<string, Schema> = {
  ipCidr: list({ $ref: '#/$defs/cidr' }),
  sourceCidr: list({ $ref: '#/$defs/cidr' }),
  domain: list({ $ref: '#/$defs/domain' }),
  domainSuffix: list({ $ref: '#/$defs/domain' }),
  domainKeyword: list(str('[^\\s]{1,253}', 'a keyword without spaces')),
  domainRegex: list({ type: 'string', minLength: 1, maxLength: 1024, 'x-expected': 'a regular expression' }),
  port: list({ $ref: '#/$defs/port' }),
  sourcePort: list({ $ref: '#/$defs/port' }),
  network: enumOf(['tcp', 'udp']),
  inbound: enumOf(['tun', 'tproxy']),
  protocol: list(enumOf(['tls', 'http', 'quic', 'dns'])),
  ruleSet: list(str(NAME, 'a rule-set name')),
  // The owner of the client socket (flows from this machine): numeric uid, executable file name, absolute path.
  uid: list(int(0, 0xfffffffe, { 'x-expected': 'a numeric uid from 0 to 4294967294' })),
  processName: list(str('[^/\\u0000]{1,255}', 'an executable file name without "/" such as curl')),
  processPath: list(str('/[^\\u0000]{0,4095}', 'an absolute executable path such as /usr/bin/curl')),
  geoip: list(str('[A-Za-z]{2}', 'a two-letter country code such as DE'), { maxItems: 300 }),
  and: list({ $ref: '#/$defs/condition' }),
  or: list({ $ref: '#/$defs/condition' }),
  not: { $ref: '#/$defs/condition' },
};

/** The name conditions of a main rule: what dns.rules and dns.fakeIp.filter match queries with. */
const dnsMatcherProperties: Record<string, Schema> = {
  domain: matcherProperties.domain!,
  domainSuffix: matcherProperties.domainSuffix!,
  domainKeyword: matcherProperties.domainKeyword!,
  domainRegex: matcherProperties.domainRegex!,
  ruleSet: matcherProperties.ruleSet!,
  and: list({ $ref: '#/$defs/dnsCondition' }),
  or: list({ $ref: '#/$defs/dnsCondition' }),
  not: { $ref: '#/$defs/dnsCondition' },
};

const credentials: Record<string, Schema> = {
  // RFC 1929 2: each at most 255 bytes. null (what the loader fills in) means none.
  username: { type: ['string', 'null'], minLength: 1, maxLength: 255, default: null },
  password: { type: ['string', 'null'], maxLength: 255, default: null },
};

const server: Record<string, Schema> = {
  server: str(`${IPV4}|${IPV6}|${HOSTNAME}`, 'a host name or IP address such as 192.0.2.1', { maxLength: 253 }),
  port: int(1, 65535, { 'x-expected': 'a port from 1 to 65535' }),
};

const outboundName = { name: str(NAME, 'a name of letters, digits, "_", "." and "-"') };

/** Outbound variants, keyed by `type` (ajv's discriminator picks the branch, so errors stay on one variant). */
const outboundVariants: Schema[] = [
  obj(
    {
      ...outboundName,
      type: { const: 'direct' },
      mark: { type: ['integer', 'null'], minimum: 0, maximum: 0xffffffff, 'x-expected': 'a 32-bit mark from 0 to 0xffffffff', default: null },
      interface: { type: ['string', 'null'], pattern: '^[^\\s/:]{1,15}$', 'x-expected': 'an interface name such as eth0', default: null },
    },
    ['name', 'type'],
  ),
  obj(
    {
      ...outboundName,
      type: { const: 'socks5' },
      ...server,
      ...credentials,
      udp: { type: 'boolean', default: false },
    },
    ['name', 'type', 'server', 'port'],
  ),
  obj({ ...outboundName, type: { const: 'http' }, ...server, ...credentials }, ['name', 'type', 'server', 'port']),
  obj({ ...outboundName, type: { const: 'reject' } }, ['name', 'type']),
  obj({ ...outboundName, type: { const: 'drop' } }, ['name', 'type']),
  ...groupVariants(),
];

/** The four group types (members, cycles and `default` are checked by semantic.ts). */
function groupVariants(): Schema[] {
  const dc = defaultGroupCheck();
  const members = { outbounds: list(str(NAME, 'an outbound name'), { maxItems: 256 }) };
  const check = {
    check: obj(
      {
        url: str(HTTP_URL, 'an http:// or https:// URL such as http://www.gstatic.com/generate_204', { maxLength: 2048, default: dc.url }),
        interval: int(1, 86400, { 'x-expected': 'seconds from 1 to 86400', default: dc.interval }),
        timeout: int(100, 60000, { 'x-expected': 'milliseconds from 100 to 60000', default: dc.timeout }),
        tolerance: int(0, 60000, { 'x-expected': 'milliseconds from 0 to 60000', default: dc.tolerance }),
        lazy: { type: 'boolean', default: dc.lazy },
      },
      [],
      { default: {} },
    ),
  };
  return [
    obj({ ...outboundName, type: { const: 'select' }, ...members, default: str(NAME, 'the name of one of the members') }, ['name', 'type', 'outbounds']),
    obj({ ...outboundName, type: { const: 'urltest' }, ...members, ...check }, ['name', 'type', 'outbounds']),
    obj({ ...outboundName, type: { const: 'fallback' }, ...members, ...check }, ['name', 'type', 'outbounds']),
    obj(
      { ...outboundName, type: { const: 'loadbalance' }, ...members, ...check, strategy: enumOf(['consistent-hash', 'round-robin'], { default: 'consistent-hash' }) },
      ['name', 'type', 'outbounds'],
    ),
  ];
}

export const OUTBOUND_TYPES = ['direct', 'socks5', 'http', 'reject', 'drop', 'select', 'urltest', 'fallback', 'loadbalance'] as const;

export const configSchema: Schema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://sluice.invalid/config.schema.json',
  title: 'sluice configuration',
  type: 'object',
  additionalProperties: false,
  properties: {
    log: obj(
      {
        level: enumOf(['trace', 'debug', 'info', 'warn', 'error', 'silent'], { default: d.log.level }),
        format: enumOf(['auto', 'json', 'pretty'], { default: d.log.format }),
      },
      [],
      { default: {} },
    ),
    tun: obj(
      {
        name: str('[^\\s/:]{1,15}', 'an interface name of at most 15 characters', { default: d.tun.name }),
        // IPv6 links need an MTU of at least 1280 (RFC 8200 5).
        mtu: int(1280, 65535, { default: d.tun.mtu }),
        offload: { type: 'boolean', default: d.tun.offload },
        // "auto": one queue per available core (src/workers/queues.ts); 64 is the addon's (and a sane) cap.
        queues: {
          anyOf: [{ type: 'integer', minimum: 1, maximum: 64 }, { const: 'auto' }],
          'x-expected': '"auto" or a whole number from 1 to 64',
          default: d.tun.queues,
        },
        ipv4: str(IPV4_CIDR, 'an IPv4 address with prefix such as 198.19.0.1/30', { default: d.tun.ipv4 }),
        ipv6: str(IPV6_CIDR, 'an IPv6 address with prefix such as fdfe:dcba:9876::1/126', { default: d.tun.ipv6 }),
      },
      [],
      { default: {} },
    ),
    sniff: obj(
      {
        timeoutMs: int(0, 10000, { default: d.sniff.timeoutMs }),
        maxBytes: int(64, 65536, { default: d.sniff.maxBytes }),
      },
      [],
      { default: {} },
    ),
    icmp: obj(
      {
        echo: enumOf(['forward', 'reply', 'unreachable', 'drop'], { default: d.icmp.echo }),
        unforwardable: enumOf(['unreachable', 'drop', 'reply'], { default: d.icmp.unforwardable }),
      },
      [],
      { default: {} },
    ),
    limits: obj(
      {
        pendingSyns: int(1, 1_000_000, { default: d.limits.pendingSyns }),
        synCookieThreshold: int(0, 1_000_000, { default: d.limits.synCookieThreshold }),
        dials: int(1, 1_000_000, { default: d.limits.dials }),
        dialsPerSource: int(1, 1_000_000, { default: d.limits.dialsPerSource }),
        tcpBufferMiB: int(1, 1_048_576, { 'x-expected': 'a whole number of MiB from 1 to 1048576', default: d.limits.tcpBufferMiB }),
      },
      [],
      { default: {} },
    ),
    udp: obj(
      {
        nat: enumOf(['endpoint-independent', 'address-dependent', 'address-and-port-dependent'], { default: d.udp.nat }),
        idleTimeout: int(1, 86400, { 'x-expected': 'seconds from 1 to 86400', default: d.udp.idleTimeout }),
        maxSessions: int(1, 1_000_000, { 'x-expected': 'a session count from 1 to 1000000', default: d.udp.maxSessions }),
      },
      [],
      { default: {} },
    ),
    dns: obj(
      {
        mode: enumOf(['fake-ip', 'real-ip'], { default: d.dns.mode }),
        hijack: { type: 'boolean', default: d.dns.hijack },
        fakeIp: obj(
          {
            ipv4Range: str(IPV4_CIDR, 'an IPv4 CIDR such as 198.18.0.0/16', { default: d.dns.fakeIp.ipv4Range }),
            ipv6Range: str(IPV6_CIDR, 'an IPv6 CIDR such as fdfe:dcba:9876:1::/96', { default: d.dns.fakeIp.ipv6Range }),
            persistPath: {
              type: ['string', 'null'],
              minLength: 1,
              'x-expected': 'a file path, or null to keep the table in memory',
              default: d.dns.fakeIp.persistPath,
            },
            ttl: int(0, 3600, { default: d.dns.fakeIp.ttl }),
            filter: { type: 'array', items: { $ref: '#/$defs/dnsCondition' }, maxItems: 1024, default: d.dns.fakeIp.filter },
          },
          [],
          { default: {} },
        ),
        upstreams: list({ $ref: '#/$defs/dnsUpstream' }, { maxItems: 16, default: d.dns.upstreams }),
        groups: {
          type: 'object',
          propertyNames: { pattern: anchored(NAME), not: { const: 'default' }, 'x-expected': 'a group name of letters, digits, "_", "." and "-" (not "default")' },
          additionalProperties: list({ $ref: '#/$defs/dnsUpstream' }, { maxItems: 16 }),
          maxProperties: 64,
          default: {},
        },
        rules: {
          type: 'array',
          items: obj({ ...dnsMatcherProperties, upstream: str(NAME, 'a dns.groups name or "default"') }, ['upstream'], { minProperties: 2 }),
          maxItems: 4096,
          default: d.dns.rules,
        },
        hostsFile: { type: ['string', 'null'], minLength: 1, 'x-expected': 'a hosts(5) file path, or null', default: d.dns.hostsFile },
        // Resolves the host names of DoH upstreams (through marked sockets, never the host's resolver).
        bootstrap: list(str(PLAIN_UPSTREAM, 'udp://IP[:port] or tcp://IP[:port], such as udp://192.0.2.53:53'), { minItems: 0, maxItems: 8, default: d.dns.bootstrap }),
        cache: obj(
          {
            maxEntries: int(0, 1_000_000, { default: d.dns.cache.maxEntries }),
            minTtl: int(0, 604800, { default: d.dns.cache.minTtl }),
            maxTtl: int(0, 604800, { default: d.dns.cache.maxTtl }),
          },
          [],
          { default: {} },
        ),
      },
      [],
      { default: {} },
    ),
    outbounds: list(
      {
        type: 'object',
        discriminator: { propertyName: 'type' },
        oneOf: outboundVariants,
      },
      { default: d.outbounds },
    ),
    ruleSets: {
      type: 'object',
      propertyNames: { pattern: anchored(NAME), 'x-expected': 'a name of letters, digits, "_", "." and "-"' },
      additionalProperties: obj(
        {
          // Required for the sluice format (semantic.ts); derived from the file for clash and sing-box.
          type: enumOf(['domain', 'cidr']),
          format: enumOf(['sluice', 'clash', 'sing-box'], { default: 'sluice' }),
          behavior: enumOf(['domain', 'ipcidr', 'classical']),
          path: { type: 'string', minLength: 1, 'x-expected': 'a file path relative to this config file' },
          entries: { type: 'array', items: { type: 'string', minLength: 1 }, 'x-expected': 'a list of entries' },
          url: str(HTTP_URL, 'an http:// or https:// URL', { maxLength: 2048 }),
          interval: int(10, 604800, { 'x-expected': 'seconds from 10 to 604800', default: 86400 }),
          outbound: str(NAME, 'an outbound name', { default: 'direct' }),
        },
        [],
      ),
      default: {},
    },
    geoip: obj(
      {
        database: { type: ['string', 'null'], minLength: 1, 'x-expected': 'the path of a MaxMind DB file such as GeoLite2-Country.mmdb', default: null },
      },
      [],
      { default: {} },
    ),
    rules: { type: 'array', items: { $ref: '#/$defs/rule' }, default: [] },
    final: str(NAME, 'an outbound name', { default: d.final }),
    route: obj(
      {
        auto: { type: 'boolean', default: d.route.auto },
        // 32-bit table ids; 253-255 (default, main, local) are refused by semantic.ts.
        table: int(1, 0xffffffff, { default: d.route.table }),
        // 0 is the local table's rule and 32766/32767 main/default's; the exclude rules need priority - 1.
        priority: int(2, 32765, { default: d.route.priority }),
        mark: int(1, 0xffffffff, { 'x-expected': 'a 32-bit mark from 1 to 0xffffffff', default: d.route.mark }),
        include: { type: 'array', items: { $ref: '#/$defs/cidr' }, maxItems: 1024, default: d.route.include },
        exclude: { type: 'array', items: { $ref: '#/$defs/cidr' }, maxItems: 1024, default: d.route.exclude },
        strictDns: { type: 'boolean', default: d.route.strictDns },
        killSwitch: { type: 'boolean', default: d.route.killSwitch },
        excludeDetected: { type: 'boolean', default: d.route.excludeDetected },
        kernelPath: { type: 'boolean', default: d.route.kernelPath },
      },
      [],
      { default: {} },
    ),
    http: obj(
      {
        enabled: { type: 'boolean', default: d.http.enabled },
        ports: list(int(1, 65535, { 'x-expected': 'a port from 1 to 65535' }), { maxItems: 64, uniqueItems: true, default: d.http.ports }),
        rules: {
          type: 'array',
          maxItems: 1024,
          items: obj({
            // RFC 9110 5.6.2 token; methods are case-sensitive and conventionally upper-case.
            method: list(str("[!#$%&'*+.^_`|~0-9A-Z-]{1,32}", 'an upper-case method such as GET')),
            pathPrefix: str('/[!-~]{0,1023}', 'a path starting with "/"'),
            pathRegex: { type: 'string', minLength: 1, maxLength: 1024, 'x-expected': 'a regular expression' },
            host: list({ $ref: '#/$defs/domain' }),
            outbound: str(NAME, 'an outbound name'),
            setHeaders: {
              type: 'object',
              propertyNames: { pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$", 'x-expected': 'a header name' },
              // RFC 9110 5.5: no CR, LF or NUL in a field value.
              additionalProperties: { type: 'string', pattern: '^[^\\r\\n\\u0000]{0,4096}$', 'x-expected': 'a header value on one line' },
            },
            removeHeaders: list(str("[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}", 'a header name')),
          }),
          default: d.http.rules,
        },
        accessLog: { type: 'boolean', default: d.http.accessLog },
        maxHeaderBytes: int(1024, 65536, { default: d.http.maxHeaderBytes }),
      },
      [],
      { default: {} },
    ),
    gateway: obj(
      {
        enabled: { type: 'boolean', default: d.gateway.enabled },
        // May be empty in the schema (the default); an enabled gateway without one is reported by gateway-checks.ts.
        lan: { type: 'array', items: str('[^\\s/:]{1,15}', 'an interface name such as eth1'), maxItems: 64, uniqueItems: true, default: d.gateway.lan },
        mode: enumOf(['tun', 'tproxy', 'tproxy-ebpf'], { default: d.gateway.mode }),
        tproxyPort: int(1, 65535, { 'x-expected': 'a port from 1 to 65535', default: d.gateway.tproxyPort }),
        tproxyMark: int(1, 0xffffffff, { 'x-expected': 'a 32-bit mark from 1 to 0xffffffff', default: d.gateway.tproxyMark }),
        preserveSource: { type: 'boolean', default: d.gateway.preserveSource },
        tproxyUdpSessions: int(1, 1_000_000, { 'x-expected': 'a session count from 1 to 1000000', default: d.gateway.tproxyUdpSessions }),
      },
      [],
      { default: {} },
    ),
    classifier: obj(
      {
        enabled: { type: 'boolean', default: d.classifier.enabled },
        interfaces: {
          type: 'array',
          items: { type: 'string', pattern: '^[^\\s/:]{1,15}$', 'x-expected': 'an interface name such as lan0' },
          maxItems: 64,
          uniqueItems: true,
          default: d.classifier.interfaces,
        },
        direction: enumOf(['ingress', 'egress'], { default: d.classifier.direction }),
        tunMark: int(1, 0xffffffff, { 'x-expected': 'a 32-bit mark from 1 to 0xffffffff', default: d.classifier.tunMark }),
        bypass: { type: 'array', items: { $ref: '#/$defs/cidr' }, maxItems: 65536, default: d.classifier.bypass },
        default: { enum: ['tun', 'kernel', null], 'x-expected': 'tun, kernel, or null to compute it from the rules', default: d.classifier.default },
        sni: { type: 'boolean', default: d.classifier.sni },
      },
      [],
      { default: {} },
    ),
    run: obj(
      {
        // POSIX portable user names (useradd's default rule), or a numeric id.
        user: { type: ['string', 'null'], pattern: anchored(ACCOUNT), 'x-expected': 'a user name such as sluice or nobody, or a numeric uid', default: d.run.user },
        group: { type: ['string', 'null'], pattern: anchored(ACCOUNT), 'x-expected': 'a group name such as sluice or nogroup, or a numeric gid', default: d.run.group },
      },
      [],
      { default: {} },
    ),
    api: obj(
      {
        // sun_path holds 108 bytes with the terminating NUL (unix(7)).
        listen: {
          type: ['string', 'null'],
          pattern: anchored(`(?:${IPV4}|\\[${IPV6}\\]|localhost):${PORT}|/[^\\0]{1,106}`),
          'x-expected': 'host:port (127.0.0.1:9090, [::1]:9090), an absolute unix socket path, or null to turn the API off',
          default: d.api.listen,
        },
        secret: { type: ['string', 'null'], pattern: '^[!-~]{1,256}$', 'x-expected': 'a token of 1-256 printable characters without spaces', default: d.api.secret },
        secretFile: { type: ['string', 'null'], minLength: 1, 'x-expected': 'a file path, or null for api-secret beside the state file', default: d.api.secretFile },
      },
      [],
      { default: {} },
    ),
    metrics: obj(
      {
        listen: {
          type: ['string', 'null'],
          pattern: anchored(`(?:${IPV4}|\\[${IPV6}\\]|localhost):${PORT}|/[^\\0]{1,106}`),
          'x-expected': 'host:port (127.0.0.1:9091, [::1]:9091), an absolute unix socket path, or null to serve /metrics only on the API',
          default: d.metrics.listen,
        },
      },
      [],
      { default: {} },
    ),
  },
  $defs: {
    cidr: str(`${IPV4_CIDR}|${IPV6_CIDR}`, EXPECT_CIDR),
    domain: str(DOMAIN, 'a domain name such as example.com', { maxLength: 253 }),
    port: {
      anyOf: [
        { type: 'integer', minimum: 1, maximum: 65535 },
        { type: 'string', pattern: anchored(`${PORT}(?:-${PORT})?`) },
      ],
      'x-expected': EXPECT_PORT,
    },
    condition: obj(matcherProperties, [], { minProperties: 1 }),
    dnsCondition: obj(dnsMatcherProperties, [], { minProperties: 1 }),
    dnsUpstream: obj(
      {
        address: str(UPSTREAM, 'udp://IP[:port], tcp://IP[:port] or https://host[:port]/path, such as udp://192.0.2.53:53'),
        outbound: str(NAME, 'an outbound name', { default: 'direct' }),
      },
      ['address'],
    ),
    rule: obj({ ...matcherProperties, outbound: str(NAME, 'an outbound name') }, ['outbound']),
  },
};
