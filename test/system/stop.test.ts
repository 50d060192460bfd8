/**
 * SIGTERM ends `sluice run` within 5 s whatever is open (issue 12 item 5).
 * In the client / gateway / server topology, sluice runs in gateway mode
 * tun; the client opens flows of each kind and keeps them open, then sluice
 * gets SIGTERM. Each subtest checks: the process exits within 5 s with code
 * 0 through the orderly path (no "stop deadline" line), the open flow is
 * logged with close "shutdown", and the gateway's routing, nftables and
 * forwarding state (per-interface flags included) is what it was before.
 *
 * Kinds: an idle TCP flow kept open, which must end with a FIN both ways
 * (the client reads EOF, not ECONNRESET, and the server sees a FIN, no
 * reset); UDP via direct; UDP via a SOCKS5 outbound
 * (danted, UDP ASSOCIATE); a DNS query through the hijack (plain upstream,
 * one query still in flight); a DoH upstream (keep-alive connection, one
 * query in flight); an HTTP L7 flow (keep-alive client connection and
 * upstream pool; the idle client connection ends with a FIN too); a dial
 * that cannot complete (the server drops SYNs);
 * then all of them at once. Gateway mode tproxy and tproxy-ebpf (the TC
 * program assigns the flows to the TPROXY listeners) run all of them at
 * once too.
 *
 * Needs root, /dev/net/tun, ip, nft, dig, openssl, danted (dante-server).
 */
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { requireRoot, waitForJsonLine, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { childEnv, collectOutput, createLab, requireCommands, startDanted, startWebServer, tempDir, TUN, type Engine, type FlowLine } from '../fixtures/engine/lab.js';
import { fullSnapshot, settle, spawnSluice } from './workstation.js';
import { orderlyStop, sigtermWithinBudget } from '../fixtures/sigterm-exit.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const HOLDER = path.resolve(here, '../fixtures/flow-holder.js');
const SERVERS = path.resolve(here, '../fixtures/stop-servers.js');

const UDP_DIRECT = 7100;
/** stop-servers.js's TCP echo, which reports how each connection ended. */
const TCP_ECHO = UDP_DIRECT;
const UDP_SOCKS = 7101;
const BLACKHOLE = 7009;
const SOCKS_PORT = 1080;

type GatewayMode = 'tun' | 'tproxy' | 'tproxy-ebpf';

function config(upstream: 'udp' | 'doh', mode: GatewayMode = 'tun'): string {
  const address = upstream === 'udp' ? `udp://${SERVER_V4}:53` : `https://${SERVER_V4}/dns-query`;
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: real-ip
  fakeIp: { persistPath: null }
  cache: { maxEntries: 0 }
  upstreams: [ { address: "${address}" } ]
outbounds:
  - { name: direct, type: direct }
  - { name: socks, type: socks5, server: ${SERVER_V4}, port: ${SOCKS_PORT}, udp: true }
rules:
  - { network: udp, port: [${UDP_SOCKS}], outbound: socks }
http: { enabled: true, ports: [80] }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: ${mode} }
`;
}

interface Lab {
  client: Netns;
  gateway: Netns;
  server: Netns;
  dir: string;
  cert: string;
  /** stop-servers.js's output (DoH requests, TCP echo ends). */
  dohLines: () => string;
}

/** A JSON-line reader over a child's stdout: every line kept, waits for one that matches. */
class Lines {
  readonly lines: Array<Record<string, unknown>> = [];
  private buffered = '';
  constructor(readonly proc: ChildProcess) {
    proc.stdout!.on('data', (d: Buffer) => {
      this.buffered += d.toString('utf8');
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        try {
          this.lines.push(JSON.parse(this.buffered.slice(0, nl)) as Record<string, unknown>);
        } catch {
          // not JSON
        }
        this.buffered = this.buffered.slice(nl + 1);
      }
    });
  }

  async waitFor(event: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.lines.some((l) => l.event === event)) return true;
      if (this.proc.exitCode !== null) return false;
      await new Promise((r) => setTimeout(r, 25));
    }
    return false;
  }
}

async function setUp(t: Test): Promise<Lab> {
  const lab = await createLab(t, 'stopflow');
  const { client, gateway, server } = await threeNamespaces(lab);
  // Forwarding off globally, on for two interfaces: sluice must put all three back.
  await gateway.sh('sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 && sysctl -qw net.ipv4.conf.wan0.forwarding=1 net.ipv6.conf.lan0.forwarding=1');
  await settle(gateway);
  const dir = tempDir(t, 'stop');
  const cert = path.join(dir, 'doh.crt');
  const key = path.join(dir, 'doh.key');
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${SERVER_V4}`, '-addext', `subjectAltName=IP:${SERVER_V4}`, '-keyout', key, '-out', cert]);
  await startWebServer(t, server);
  const servers = server.spawn([process.execPath, SERVERS, String(UDP_DIRECT), SERVER_V4, SERVER_V4, cert, key], { env: childEnv });
  const dohLines = collectOutput(servers);
  await waitForJsonLine(servers, (m: { event?: string }) => m.event === 'ready');
  await startDanted(t, server, dir, SOCKS_PORT);
  // A port whose SYNs vanish: sluice's dial to it stays pending.
  await server.sh(`nft add table inet stoptest; nft add chain inet stoptest input '{ type filter hook input priority 0; }'; nft add rule inet stoptest input tcp dport ${BLACKHOLE} drop`);
  return { client, gateway, server, dir, cert, dohLines };
}

/** Starts a flow-holder in the client namespace. */
function hold(t: Test, lab: Lab, mode: 'tcp' | 'udp' | 'http' | 'connect', port: number): Lines {
  const proc = lab.client.spawn([process.execPath, HOLDER, mode, SERVER_V4, String(port)], { env: childEnv });
  const lines = new Lines(proc);
  const output = collectOutput(proc);
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGTERM');
    if (!t.passing()) t.comment(`flow-holder ${mode} ${port}: ${output()}`);
  });
  return lines;
}

/** Run after the stop: checks how the flow ended at its peers. */
type AfterStop = (t: Test) => Promise<void>;

interface Kind {
  name: string;
  upstream: 'udp' | 'doh';
  /** Opens the flow; resolves when it is open (asserting so), with what to check after the stop. */
  open(t: Test, lab: Lab): Promise<AfterStop | void>;
  /** The flow lines this kind must leave with close "shutdown". */
  expect: Array<Partial<FlowLine>>;
}

async function openHolder(t: Test, lab: Lab, mode: 'tcp' | 'udp' | 'http', port: number, what: string): Promise<Lines> {
  const h = hold(t, lab, mode, port);
  t.ok(await h.waitFor('open', 15_000), `${what}: the flow carried its first exchange and stays open`);
  return h;
}

/** A dig in the background, through the hijack (the client's resolver is the server's address). */
function digInBackground(t: Test, lab: Lab, name: string): void {
  const proc = lab.client.spawn(['dig', '+tries=1', '+time=30', `@${SERVER_V4}`, name, 'A']);
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGTERM');
  });
}

const DNS_PORT = `${SERVER_V4}:53`;

/** stop-servers.js's lines of one event. */
function serverEvents(lab: Lab, event: string): Array<Record<string, unknown>> {
  return lab
    .dohLines()
    .split('\n')
    .filter((l) => l.includes(`"event":"${event}"`))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/**
 * An idle TCP flow: after the stop, the client has read EOF (a FIN, not
 * ECONNRESET) and the server has seen a FIN and no reset.
 */
async function openIdleTcp(t: Test, lab: Lab): Promise<AfterStop> {
  const finsBefore = serverEvents(lab, 'tcp-end').length;
  const errorsBefore = serverEvents(lab, 'tcp-error').length;
  const h = await openHolder(t, lab, 'tcp', TCP_ECHO, 'TCP');
  return async (t) => {
    // The relay ends only once both peers have answered with their FINs, so both have
    // seen sluice's; the lines may still be on their way through the pipes.
    const deadline = Date.now() + 10_000;
    const closed = (): Array<Record<string, unknown>> => h.lines.filter((l) => l.event === 'closed');
    while (Date.now() < deadline && (closed().length === 0 || serverEvents(lab, 'tcp-end').length === finsBefore)) await new Promise((r) => setTimeout(r, 50));
    t.same(closed().map((l) => l.how), ['fin'], `the client read EOF: sluice closed its side with a FIN, no reset (${JSON.stringify(closed())})`);
    t.ok(serverEvents(lab, 'tcp-end').length > finsBefore, 'the server saw a FIN from sluice');
    const errors = serverEvents(lab, 'tcp-error').slice(errorsBefore);
    t.same(errors, [], 'and no reset or error on its side');
  };
}

const KINDS: Kind[] = [
  {
    name: 'an idle TCP flow kept open (ends with a FIN both ways)',
    upstream: 'udp',
    open: openIdleTcp,
    expect: [{ network: 'tcp', dst: `${SERVER_V4}:${TCP_ECHO}`, outbound: 'direct' }],
  },
  {
    name: 'UDP via direct',
    upstream: 'udp',
    open: async (t, lab) => void (await openHolder(t, lab, 'udp', UDP_DIRECT, 'UDP direct')),
    expect: [{ network: 'udp', dst: `${SERVER_V4}:${UDP_DIRECT}`, outbound: 'direct' }],
  },
  {
    name: 'UDP via a SOCKS5 outbound (UDP ASSOCIATE)',
    upstream: 'udp',
    open: async (t, lab) => void (await openHolder(t, lab, 'udp', UDP_SOCKS, 'UDP via SOCKS5')),
    expect: [{ network: 'udp', dst: `${SERVER_V4}:${UDP_SOCKS}`, outbound: 'socks' }],
  },
  {
    name: 'DNS through the hijack, one query in flight',
    upstream: 'udp',
    open: async (t, lab) => {
      const r = await lab.client.exec(['dig', '+short', '+tries=1', '+time=5', `@${SERVER_V4}`, 'answered.test', 'A'], { allowFail: true, timeoutMs: 15_000 });
      t.equal(r.stdout.trim(), SERVER_V4, `the hijack answered through the upstream (${r.stdout.trim()} ${r.stderr.trim()})`);
      digInBackground(t, lab, 'slow.test');
      await new Promise((r) => setTimeout(r, 500));
    },
    expect: [{ network: 'udp', dst: DNS_PORT, protocol: 'dns' }],
  },
  {
    name: 'a DoH upstream, one query in flight',
    upstream: 'doh',
    open: async (t, lab) => {
      const seen = (lab.dohLines().match(/"event":"doh"/g) ?? []).length;
      const r = await lab.client.exec(['dig', '+short', '+tries=1', '+time=5', `@${SERVER_V4}`, 'doh.test', 'A'], { allowFail: true, timeoutMs: 15_000 });
      t.equal(r.stdout.trim(), SERVER_V4, `answered through DoH (${r.stdout.trim()} ${r.stderr.trim()})`);
      t.ok((lab.dohLines().match(/"event":"doh"/g) ?? []).length > seen, 'the DoH server saw the query');
      digInBackground(t, lab, 'slow-doh.test');
      await new Promise((r) => setTimeout(r, 500));
    },
    expect: [{ network: 'udp', dst: DNS_PORT, protocol: 'dns' }],
  },
  {
    name: 'an HTTP L7 flow (keep-alive client and upstream pool)',
    upstream: 'udp',
    open: async (t, lab) => {
      const h = await openHolder(t, lab, 'http', 80, 'HTTP L7');
      // An idle keep-alive connection is closed with a FIN as well.
      return async (t) => {
        const deadline = Date.now() + 10_000;
        const closed = (): Array<Record<string, unknown>> => h.lines.filter((l) => l.event === 'closed');
        while (Date.now() < deadline && closed().length === 0) await new Promise((r) => setTimeout(r, 50));
        t.same(closed().map((l) => l.how), ['fin'], `HTTP L7: the idle keep-alive client read EOF, no reset (${JSON.stringify(closed())})`);
      };
    },
    expect: [{ network: 'tcp', dst: `${SERVER_V4}:80`, protocol: 'http', outbound: 'direct' }],
  },
  {
    name: 'a dial still pending (the server drops the SYNs)',
    upstream: 'udp',
    open: async (t, lab) => {
      const h = hold(t, lab, 'connect', BLACKHOLE);
      t.ok(await h.waitFor('started', 10_000), 'the client is connecting');
      const deadline = Date.now() + 10_000;
      let pending = '';
      while (Date.now() < deadline && pending === '') {
        pending = (await lab.gateway.sh(`ss -Htn state syn-sent 'dport = :${BLACKHOLE}'`)).trim();
        if (pending === '') await new Promise((r) => setTimeout(r, 100));
      }
      t.not(pending, '', `sluice's upstream dial is pending (${pending})`);
    },
    expect: [{ network: 'tcp', dst: `${SERVER_V4}:${BLACKHOLE}` }],
  },
];

async function stopAndCheck(t: Test, lab: Lab, engine: Engine, before: string, expect: Array<Partial<FlowLine>>, after: AfterStop[]): Promise<void> {
  await sigtermWithinBudget(t, engine);
  const stopping = engine.lines.find((l) => l.msg === 'stopping');
  t.ok(stopping !== undefined && Number(stopping.openFlows) >= expect.length, `"stopping" counted the open flows (${String(stopping?.openFlows)})`);
  orderlyStop(t, engine);
  t.ok(engine.lines.some((l) => l.msg === 'stopped'), 'logged "stopped"');
  const flows = engine.flows();
  for (const want of expect) {
    const keys = Object.keys(want) as Array<keyof FlowLine>;
    const hit = flows.find((f) => keys.every((k) => f[k] === want[k]) && f.close === 'shutdown');
    t.ok(hit !== undefined, `flow line ${JSON.stringify(want)} with close "shutdown"${hit === undefined ? `; flow lines: ${JSON.stringify(flows)}` : ''}`);
  }
  for (const check of after) await check(t);
  t.equal(await fullSnapshot(lab.gateway), before, 'routing, nftables, tc and all forwarding flags as before');
}

t.test('SIGTERM ends sluice run within 5 s whatever is open', { timeout: 300_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', 'dig', 'openssl', '/usr/sbin/danted'])) return;
  const lab = await setUp(t);
  const before = await fullSnapshot(lab.gateway);
  t.match(before, /conf\/wan0\/forwarding 1/, 'set up: wan0 forwards');
  t.match(before, /ipv6\/conf\/lan0\/forwarding 1/, 'set up: IPv6 lan0 forwards');

  const run = async (t: Test, name: string, upstream: 'udp' | 'doh', kinds: Kind[], mode: GatewayMode = 'tun'): Promise<void> => {
    const state = path.join(lab.dir, `${name}.state.json`);
    // The sluice child trusts the DoH server's certificate.
    const engine = spawnSluice(t, lab.gateway, lab.dir, config(upstream, mode), state, `${name}.yaml`, { ...childEnv, NODE_EXTRA_CA_CERTS: lab.cert });
    await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
    if (mode === 'tproxy-ebpf') t.notOk(engine.lines.some((l) => /unavailable/.test(String(l.msg))), 'the TC program assigns the flows (no fallback to nftables TPROXY)');
    const after: AfterStop[] = [];
    for (const kind of kinds) {
      const check = await kind.open(t, lab);
      if (check) after.push(check);
    }
    await stopAndCheck(t, lab, engine, before, kinds.flatMap((k) => k.expect), after);
    t.notOk(existsSync(state), 'the state file is gone');
  };

  for (const [i, kind] of KINDS.entries()) {
    await t.test(kind.name, async (t) => run(t, `kind${i}`, kind.upstream, [kind]));
  }
  await t.test('all kinds at once', async (t) => run(t, 'all', 'doh', KINDS));
  // TPROXY: the flows reach sluice through its transparent listeners, not the TUN.
  await t.test('gateway mode tproxy: all kinds at once', async (t) => run(t, 'tproxy', 'doh', KINDS, 'tproxy'));
  await t.test('gateway mode tproxy-ebpf: all kinds at once', async (t) => run(t, 'tproxyebpf', 'doh', KINDS, 'tproxy-ebpf'));
});
