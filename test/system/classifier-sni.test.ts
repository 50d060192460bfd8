/**
 * The in-kernel SNI / Host filter (classifier.sni) for kernel-path flows,
 * in the client / gateway / server topology with the classifier on the
 * gateway's LAN side: the server's prefixes are direct by address (kernel
 * path), and reject rules on domains fill the deny map. With curl from the
 * client:
 *   - TLS to a denied name (a suffix rule, a subdomain; IPv4 and IPv6) and
 *     HTTP with a denied Host are reset in the kernel (curl sees a
 *     connection reset; no flow line: sluice never saw them);
 *   - an allowed name passes over TLS and HTTP;
 *   - the filter's counters move (blocked, allowed, resets), on SIGUSR2
 *     and in the control API's GET /v1/stats;
 *   - a ClientHello split over segments passes, counted as unseen;
 *   - exact names, suffixes (the name and below) and a domain rule set's
 *     lines are all in the deny set;
 *   - SIGHUP after adding a name to the rule set denies it live.
 *
 * Needs root, /dev/net/tun, ip, tc, curl, openssl, an eBPF-capable kernel.
 */
import t from 'tap';
import path from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { createLab, requireCommands, selfSignedCert, startWebServer, tempDir, type Engine, type LogLine } from '../fixtures/engine/lab.js';
import { startSluice } from './workstation.js';
import { CONFIG_HEAD } from './gateway-lab.js';

/** A TLS client whose first TCP segment holds only the first 12 bytes of its ClientHello (Nagle off, a pause between writes). */
const SPLIT_HELLO = `
const net = require('net'), tls = require('tls'), { Duplex } = require('stream');
const raw = net.connect(443, process.argv[1]); raw.setNoDelay(true);
let first = true;
const pipe = new Duplex({
  write(chunk, enc, cb) { if (first) { first = false; raw.write(chunk.subarray(0, 12)); setTimeout(() => { raw.write(chunk.subarray(12)); cb(); }, 200); } else raw.write(chunk, cb); },
  read() {},
});
raw.on('data', (d) => pipe.push(d)); raw.on('end', () => pipe.push(null)); raw.on('error', (e) => { console.error(e.message); process.exit(2); });
raw.once('connect', () => {
  const s = tls.connect({ socket: pipe, servername: process.argv[2], rejectUnauthorized: false }, () => { console.log('handshake done'); process.exit(0); });
  s.on('error', (e) => { console.error(e.message); process.exit(1); });
});
setTimeout(() => { console.error('timeout'); process.exit(3); }, 8000);
`;

type Sni = Record<'tlsAllowed' | 'tlsBlocked' | 'tlsUnseen' | 'httpAllowed' | 'httpBlocked' | 'httpUnseen' | 'quicUnseen' | 'resets', number>;

function config(deniedFile: string): string {
  return `${CONFIG_HEAD}  - { name: block, type: reject }
ruleSets:
  denied: { type: domain, path: ${deniedFile} }
rules:
  - { ipCidr: [203.0.113.0/24, "2001:db8:5::/64"], outbound: direct }
  - { domainSuffix: [blocked.example], outbound: block }
  - { domain: [exact.example], outbound: block }
  - { ruleSet: [denied], outbound: block }
route: { table: 2022, priority: 9000 }
gateway: { enabled: true, lan: [lan0], mode: tun }
classifier: { enabled: true, sni: true }
`;
}

async function sniCounters(engine: Engine): Promise<Sni> {
  const n = engine.lines.length;
  engine.proc.kill('SIGUSR2');
  const line = await engine.waitFor<LogLine & { classifierSni?: Sni }>((l) => l.msg === 'counters' && engine.lines.indexOf(l) >= n, 5000, 'a counters line');
  if (line.classifierSni === undefined) throw new Error(`no SNI counters in ${JSON.stringify(line)}`);
  return line.classifierSni;
}

/** curl by name pinned to `ip`; returns curl's exit code and error text. */
async function fetchName(client: Netns, scheme: 'http' | 'https', name: string, ip: string): Promise<{ code: number; err: string; body: string }> {
  const port = scheme === 'https' ? 443 : 80;
  const r = await client.exec(['curl', '-sS', '-k', '--max-time', '6', '--resolve', `${name}:${port}:${ip.includes(':') ? `[${ip}]` : ip}`, `${scheme}://${name}/`], { allowFail: true, timeoutMs: 15_000 });
  return { code: r.code, err: r.stderr.trim(), body: r.stdout.trim() };
}

t.test('classifier.sni: denied names reset in the kernel, allowed names pass, counters move, reload', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', 'curl', 'openssl'])) return;
  const dir = tempDir(t, 'clssni');
  const state = path.join(dir, 'state.json');
  const lab = await createLab(t, 'clssnixx');
  const { client, gateway, server } = await threeNamespaces(lab);
  await gateway.sh('sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0');
  await startWebServer(t, server, await selfSignedCert(dir, 'allowed.example'));

  const denied = path.join(dir, 'denied.txt');
  writeFileSync(denied, 'full:listed.example\nkeyword:ads\n');
  const engine = await startSluice(t, gateway, dir, config(denied), state);
  const attached = await engine.waitFor((l) => l.msg === 'classifier attached' || /unavailable|could not be attached/.test(String(l.msg)), 10_000, 'the classifier line');
  t.match(attached, { msg: 'classifier attached', sniDenied: 3, sniSkipped: 1 }, 'attached with three denied names (a keyword line cannot be hashed: skipped)');

  const s0 = await sniCounters(engine);
  const allowedTls = await fetchName(client, 'https', 'allowed.example', SERVER_V4);
  t.equal(allowedTls.code, 0, `TLS allowed.example passes (${allowedTls.err})`);
  t.match(allowedTls.body, /"host":"allowed\.example"/, 'and reaches the server');
  const allowedHttp = await fetchName(client, 'http', 'allowed.example', SERVER_V4);
  t.equal(allowedHttp.code, 0, `HTTP allowed.example passes (${allowedHttp.err})`);
  for (const [scheme, name, ip] of [
    ['https', 'www.blocked.example', SERVER_V4],
    ['https', 'blocked.example', SERVER_V6],
    ['https', 'EXACT.example', SERVER_V4],
    ['http', 'deep.sub.blocked.example', SERVER_V4],
    ['https', 'listed.example', SERVER_V4],
  ] as const) {
    const r = await fetchName(client, scheme, name, ip);
    t.not(r.code, 0, `${scheme} ${name} via ${ip}: refused (curl exit ${r.code})`);
    t.match(r.err, /reset|Connection reset|SSL_ERROR_SYSCALL|Recv failure/i, `by a reset (${r.err})`);
  }
  t.equal((await fetchName(client, 'https', 'notexact.example', SERVER_V4)).code, 0, 'an exact rule does not deny other names ending in it');
  const s1 = await sniCounters(engine);
  t.comment(`SNI counters: ${JSON.stringify(s1)}`);
  t.ok(s1.tlsAllowed >= s0.tlsAllowed + 2, `tlsAllowed rose (${s0.tlsAllowed} -> ${s1.tlsAllowed})`);
  t.ok(s1.tlsBlocked >= s0.tlsBlocked + 4, `tlsBlocked rose (${s0.tlsBlocked} -> ${s1.tlsBlocked})`);
  t.ok(s1.httpAllowed >= s0.httpAllowed + 1, `httpAllowed rose (${s0.httpAllowed} -> ${s1.httpAllowed})`);
  t.ok(s1.httpBlocked >= s0.httpBlocked + 1, `httpBlocked rose (${s0.httpBlocked} -> ${s1.httpBlocked})`);
  t.ok(s1.resets >= s1.tlsBlocked + s1.httpBlocked, `a reset for each (${s1.resets})`);
  t.equal(engine.flows().length, 0, 'no flow line: everything stayed on the kernel path');
  // The same counters, live, where users look: the control API's /v1/stats (classifierStatus).
  const secret = readFileSync(path.join(dir, 'api-secret'), 'utf8').trim();
  const stats = JSON.parse((await gateway.exec(['curl', '-sS', '-H', `Authorization: Bearer ${secret}`, 'http://127.0.0.1:9090/v1/stats'], { timeoutMs: 10_000 })).stdout) as {
    classifierStatus?: { actions: { kernel: { packets: number } }; sni: Sni | null };
  };
  t.ok((stats.classifierStatus?.sni?.tlsBlocked ?? 0) >= s1.tlsBlocked, `GET /v1/stats: classifierStatus.sni.tlsBlocked ${stats.classifierStatus?.sni?.tlsBlocked}`);
  t.ok((stats.classifierStatus?.actions.kernel.packets ?? 0) > 0, `and the kernel action's packets (${stats.classifierStatus?.actions.kernel.packets})`);

  // A ClientHello split over segments (the first carries 12 bytes): the filter cannot see the name, counts it and lets it pass.
  const u0 = await sniCounters(engine);
  const split = await client.exec([process.execPath, '-e', SPLIT_HELLO, SERVER_V4, 'www.blocked.example'], { allowFail: true, timeoutMs: 15_000, env: { ...process.env, NODE_OPTIONS: '' } });
  t.equal(split.stdout.trim(), 'handshake done', `a split ClientHello for a denied name passes (${split.stderr.trim()})`);
  const u1 = await sniCounters(engine);
  t.ok(u1.tlsUnseen >= u0.tlsUnseen + 1, `counted as unseen (${u0.tlsUnseen} -> ${u1.tlsUnseen})`);
  t.equal(u1.tlsBlocked, u0.tlsBlocked, 'not as blocked');

  // Reload: allowed.example joins the rule set, live.
  writeFileSync(denied, 'full:listed.example\nallowed.example\n');
  engine.proc.kill('SIGHUP');
  await engine.waitFor((l) => l.msg === 'classifier updated' && l.sniDenied === 4, 10_000, '"classifier updated" with four denied names');
  const r = await fetchName(client, 'https', 'www.allowed.example', SERVER_V4);
  t.not(r.code, 0, `after the reload www.allowed.example is refused (${r.err})`);
  const s2 = await sniCounters(engine);
  t.ok(s2.tlsBlocked > s1.tlsBlocked, 'counted as blocked');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
});
