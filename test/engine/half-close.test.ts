/**
 * Issue 12 item 3: a clean close in every order ends with FINs, through
 * `sluice run` as without it. The client / gateway / server topology, the
 * half-close programs of test/fixtures/half-close.py, and sluice in gateway
 * mode tun and mode tproxy, with a direct and a SOCKS5 (dante) outbound:
 *   (a) the client sends 5 bytes and shuts down its write side, waits 300 ms
 *       without reading; the server echoes and closes -> echo, then EOF;
 *   (b) the server sends 64 KiB and half-closes first; the client reads to
 *       EOF, then uploads 2 MB and closes -> the server gets it all and EOF;
 *   (c) the client uploads 4 MB and half-closes; the server answers with
 *       its SHA-256 and closes -> the answer, then EOF;
 *   (d) both send and half-close at once -> each gets all, then EOF;
 *   (r) and the opposite, not a clean close: the client resets after 64 KiB
 *       -> the server sees a reset (ECONNRESET), never an EOF.
 * No RST may be seen: nftables counters of RST segments in and out of the
 * client and the server namespaces, and the kernels' own TcpOutRsts /
 * TcpEstabResets / TcpExtTCPAbort* counters there (what `nstat` shows, read
 * from /proc/net/snmp and /proc/net/netstat), stay where they were.
 * The baseline runs the same cases over the kernel's own forwarding first.
 *
 * TUN with direct routes before accepting (no name-dependent rule); TUN
 * with socks5 has a domain rule, so flows are sniffed first (the path where
 * the client's FIN can arrive before the relay starts); TPROXY always sniffs.
 *
 * microsocks is not used: it closes both directions on the first EOF
 * (no half-close of its own), so it fails (a) without sluice too.
 *
 * Needs root, /dev/net/tun, ip, nft, tcpdump, danted, /usr/bin/python3.
 */
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { createLab, requireCommands, startDanted, tempDir, TUN, type Engine } from '../fixtures/engine/lab.js';
import { startSluice } from '../system/workstation.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const PROGRAM = path.resolve(here, '../../../test/fixtures/half-close.py');
const PYTHON = '/usr/bin/python3';
const PORT = 9100;
const SOCKS_PORT = 1080;

type Case = 'a' | 'b' | 'c' | 'd' | 'r';
const CASES: Array<{ c: Case; size: number; what: string }> = [
  { c: 'a', size: 5, what: 'client half-closes after 5 bytes, server echoes and closes' },
  { c: 'b', size: 2 << 20, what: 'server half-closes first, client uploads 2 MB then closes' },
  { c: 'c', size: 4 << 20, what: 'client uploads 4 MB and half-closes, server answers its SHA-256 and closes' },
  { c: 'd', size: 64 << 10, what: 'both send 64 KiB and half-close at once' },
  { c: 'r', size: 64 << 10, what: 'the client sends 64 KiB and resets' },
];

interface Report {
  side: 'client' | 'server';
  kind?: string;
  case?: Case;
  port?: number;
  sent?: number;
  received?: number;
  match?: boolean;
  sha256?: string;
  sentSha256?: string;
  eof?: boolean;
  error?: string | null;
}

const RST_TABLE = `table inet rstwatch {
  chain in { type filter hook input priority -300; policy accept; tcp flags & rst == rst counter comment "in"; }
  chain out { type filter hook output priority -300; policy accept; tcp flags & rst == rst counter comment "out"; }
}
`;
const NSTAT = ['TcpOutRsts', 'TcpEstabResets', 'TcpExtTCPAbortOnData', 'TcpExtTCPAbortOnClose', 'TcpExtTCPAbortOnMemory', 'TcpExtTCPAbortOnTimeout', 'TcpExtTCPAbortOnLinger', 'TcpExtTCPAbortFailed'];

/** RST segments seen by the nftables counters plus the kernel's reset/abort counters of one namespace. */
async function resets(ns: Netns): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const doc = JSON.parse(await ns.sh('nft -j list table inet rstwatch')) as { nftables: Array<{ rule?: { comment?: string; expr: Array<{ counter?: { packets: number } }> } }> };
  for (const item of doc.nftables) {
    const r = item.rule;
    if (r?.comment === undefined) continue;
    for (const e of r.expr) if (e.counter) out[`rst ${r.comment}`] = e.counter.packets;
  }
  const snmp = await ns.sh('cat /proc/net/snmp /proc/net/netstat');
  const lines = snmp.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    const keys = lines[i]!.split(/\s+/);
    const vals = lines[i + 1]!.split(/\s+/);
    if (keys[0] !== vals[0] || vals[1] === undefined || !/^\d/.test(vals[1])) continue;
    const prefix = keys[0]!.replace(':', '');
    for (let k = 1; k < keys.length; k++) {
      const name = prefix + keys[k];
      if (NSTAT.includes(name)) out[name] = Number(vals[k]);
    }
  }
  return out;
}

function delta(before: Record<string, number>, after: Record<string, number>): string[] {
  return Object.keys(after).filter((k) => after[k] !== before[k]).map((k) => `${k} +${after[k]! - (before[k] ?? 0)}`);
}

/** JSON lines of the half-close server, in order. */
class ServerLog {
  readonly lines: Report[] = [];
  private buffered = '';
  private wake: (() => void) | null = null;
  constructor(proc: ChildProcess) {
    proc.stdout!.on('data', (d: Buffer) => {
      this.buffered += d.toString('utf8');
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line) as Report);
        } catch {
          // not ours
        }
      }
      this.wake?.();
    });
  }
  async next(index: number, timeoutMs: number): Promise<Report | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length <= index) {
      if (Date.now() > deadline) return null;
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 100);
      });
    }
    return this.lines[index]!;
  }
}

/**
 * tcpdump on one link, keeping every RST line with the 12 lines before it
 * (bounded), so a failing run says which connection was reset and when.
 */
class RstCapture {
  private readonly recent: string[] = [];
  readonly resets: string[] = [];
  private partial = '';
  constructor(proc: ChildProcess) {
    proc.stdout!.on('data', (d: Buffer) => {
      const lines = (this.partial + d.toString('utf8')).split('\n');
      this.partial = lines.pop()!;
      for (const line of lines) {
        if (line.includes('Flags [R') && this.resets.length < 400) this.resets.push(...this.recent, `>>> ${line}`, '');
        this.recent.push(line);
        if (this.recent.length > 12) this.recent.shift();
      }
    });
  }
}

interface Lab {
  client: Netns;
  gateway: Netns;
  server: Netns;
  log: ServerLog;
  served: number;
  captures: Array<{ name: string; cap: RstCapture }>;
}

async function runCases(t: Test, lab: Lab, label: string, host: string, engine: Engine | null): Promise<void> {
  for (const { c, size, what } of CASES) {
    const before = { client: await resets(lab.client), server: await resets(lab.server) };
    const r = await lab.client.exec([PYTHON, PROGRAM, 'client', host, String(PORT), c, String(size)], { allowFail: true, timeoutMs: 45_000 });
    let client: Report | null = null;
    try {
      client = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Report;
    } catch {
      t.fail(`${label} (${c}): the client printed no report (exit ${r.code}): ${r.stderr.trim().slice(-400)}`);
      continue;
    }
    const server = await lab.log.next(lab.served, 15_000);
    lab.served = lab.log.lines.length;
    if (engine !== null) {
      const src = host.includes(':') ? `[${CLIENT_V6}]:${client.port}` : `${CLIENT_V4}:${client.port}`;
      const flow = await engine.flowFrom(src, 15_000);
      t.ok(flow !== null, `${label} (${c}): sluice logged the flow`);
      if (flow !== null && c === 'r') t.match(flow.close, /^client /, `${label} (${c}): the flow line says the client failed (${flow.close})`);
      else if (flow !== null) t.equal(flow.close, 'fin', `${label} (${c}): the flow line says close fin (${flow.close})`);
    }
    if (c === 'r') {
      // A reset passed on as a reset: the server must not take it for a complete upload.
      t.ok(server !== null && server.eof === false && typeof server.error === 'string' && /reset/i.test(server.error), `${label} (${c}): the server saw the reset, not an EOF (${JSON.stringify(server)})`);
      continue;
    }
    // Let any late segment (a RST after the last FIN) arrive before counting.
    await new Promise((res) => setTimeout(res, 500));
    const after = { client: await resets(lab.client), server: await resets(lab.server) };
    const tag = `${label} (${c}) ${what}`;
    t.ok(client.error == null && client.eof === true, `${tag}: the client read to a clean EOF (${JSON.stringify(client)})`);
    t.ok(server !== null && server.error == null && server.eof === true, `${tag}: the server read to a clean EOF (${JSON.stringify(server)})`);
    if (c === 'a' || c === 'c') {
      t.ok(client.match === true, `${tag}: the client got the server's whole answer (${client.received} bytes)`);
      if (c === 'c') t.equal(server?.received, size, `${tag}: the server received all ${size} bytes`);
    } else {
      t.ok(client.match === true, `${tag}: the client got the server's 64 KiB`);
      t.equal(server?.received, size, `${tag}: the server got all ${size} bytes of the client`);
      t.equal(server?.sha256, client.sentSha256, `${tag}: SHA-256 of what the server got matches what the client sent`);
    }
    const clean = t.same(delta(before.client, after.client), [], `${tag}: no RST, no reset or abort counted in the client namespace`);
    if (!t.same(delta(before.server, after.server), [], `${tag}: no RST, no reset or abort counted in the server namespace`) || !clean) {
      for (const { name, cap } of lab.captures) t.comment(`tcpdump ${name}, RSTs so far with what came before:\n${cap.resets.join('\n')}`);
    }
  }
}

/** Waits (up to 10 s) until the test's TCP connections in `nss` are all closed or in TIME-WAIT. */
async function quiet(...nss: Netns[]): Promise<boolean> {
  const filter = `( sport >= :${PORT} and sport <= :${PORT + 2} ) or ( dport >= :${PORT} and dport <= :${PORT + 2} ) or sport = :${SOCKS_PORT} or dport = :${SOCKS_PORT}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    let open = '';
    for (const ns of nss) open += await ns.sh(`ss -Htan exclude time-wait exclude listening '${filter}'`);
    if (open.trim() === '') return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function config(gateway: string, outbound: 'direct' | 'socks', sniffByName: boolean): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
sniff: { timeoutMs: 300 }
dns:
  mode: fake-ip
  hijack: false
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], ${gateway} }
outbounds:
  - { name: direct, type: direct }
  - { name: socks, type: socks5, server: ${SERVER_V4}, port: ${SOCKS_PORT} }
${sniffByName ? 'rules:\n  - { domain: [never.example], outbound: direct }\n' : ''}final: ${outbound}
`;
}

t.test('half-close in every order ends in FINs, without sluice and through sluice run', { timeout: 400_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', 'tcpdump', 'danted', PYTHON])) return;
  const dir = tempDir(t, 'halfclose');
  const l = await createLab(t, 'halfclos');
  const topo = await threeNamespaces(l);
  for (const ns of [topo.client, topo.server]) await ns.exec(['nft', '-f', '-'], { input: RST_TABLE });
  const proc = topo.server.spawn([PYTHON, PROGRAM, 'server', String(PORT)]);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  t.teardown(() => {
    if (!t.passing()) t.comment(`half-close server stderr:\n${stderr}`);
  });
  const log = new ServerLog(proc);
  t.ok((await log.next(0, 10_000))?.kind === undefined, 'the half-close server is ready');
  const captures: Lab['captures'] = [];
  for (const [name, ns, dev] of [['client eth0', topo.client, 'eth0'], ['server (any)', topo.server, 'any']] as const) {
    const dump = ns.spawn(['tcpdump', '-i', dev, '-nn', '-l', '-S', '-tt', 'tcp']);
    captures.push({ name, cap: new RstCapture(dump) });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 5000);
      dump.stderr!.on('data', (d: Buffer) => {
        if (d.toString().includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }
  const lab: Lab = { ...topo, log, served: 1, captures };
  await startDanted(t, topo.server, dir, SOCKS_PORT);

  await t.test('baseline: the kernel forwards', async (t) => {
    await runCases(t, lab, 'kernel IPv4', SERVER_V4, null);
    await runCases(t, lab, 'kernel IPv6', SERVER_V6, null);
  });

  const setups: Array<{ label: string; gateway: string; outbound: 'direct' | 'socks'; byName: boolean; v6: boolean }> = [
    { label: 'tun direct', gateway: 'mode: tun', outbound: 'direct', byName: false, v6: true },
    { label: 'tun direct sniffed', gateway: 'mode: tun', outbound: 'direct', byName: true, v6: false },
    { label: 'tun socks5', gateway: 'mode: tun', outbound: 'socks', byName: true, v6: false },
    { label: 'tproxy direct', gateway: 'mode: tproxy', outbound: 'direct', byName: false, v6: true },
    { label: 'tproxy socks5', gateway: 'mode: tproxy', outbound: 'socks', byName: false, v6: false },
  ];
  for (const s of setups) {
    await t.test(s.label, async (t) => {
      const state = path.join(dir, `${s.label.replace(/ /g, '-')}.state.json`);
      const engine = await startSluice(t, topo.gateway, dir, config(s.gateway, s.outbound, s.byName), state);
      await engine.waitFor((ln) => ln.msg === 'gateway installed', 5000, '"gateway installed"');
      await runCases(t, lab, `${s.label} IPv4`, SERVER_V4, engine);
      if (s.v6) await runCases(t, lab, `${s.label} IPv6`, SERVER_V6, engine);
      // Every connection finished its close before sluice stops: a late
      // segment of an old connection must not meet the next run's listener.
      t.ok(await quiet(topo.client, topo.gateway), 'no connection left open but TIME-WAIT in the client and gateway');
      t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
    });
  }
});
