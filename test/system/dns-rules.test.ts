/**
 * sluice's DNS in workstation mode (route.auto), with real clients (dig,
 * curl) and real upstreams (two dnsmasq instances that answer the same
 * names differently, so the answer tells which one was asked):
 *  - dns.rules: the first rule whose name conditions hold picks the
 *    upstream group; other names go to dns.upstreams;
 *  - dns.fakeIp.filter: those names get their real address, the rest fake
 *    ones (which reach no upstream at all);
 *  - a failing upstream is logged at warn with its address and the reason,
 *    once per interval however many queries fail;
 *  - fake-IP mappings survive kill -9 shortly after the query: after a
 *    restart the held fake address still reaches the server and the name
 *    maps to the same address;
 *  - a DoH upstream given by host name is bootstrapped from dns.hostsFile
 *    or from a plain upstream; with neither able to answer, the failure is
 *    logged with the reason (it used to be a silent SERVFAIL).
 *
 * Needs root, /dev/net/tun, dig, curl, dnsmasq, openssl, ip, nft.
 */
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { requireRoot, type Netns } from '../harness/netns.js';
import { childEnv, collectOutput, curl, describe, requireCommands, startDnsmasq, tempDir, timed, TUN, waitListening, type LogLine } from '../fixtures/engine/lab.js';
import { SERVER_V4, spawnSluice, startSluice, workstation } from './workstation.js';
import { SUITE_QUEUES } from '../fixtures/suite-queues.js';

const FIRST = '203.0.113.3';
const SECOND = '203.0.113.4';
/** Nothing listens on this port: the upstream fails at once (ICMP port unreachable). */
const REFUSING = `udp://${SERVER_V4}:5353`;
/** Any address routed into the TUN: only the hijack answers it. */
const RESOLVER = '203.0.113.53';
const STOP_SERVERS = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../fixtures/stop-servers.js');
const DOH_ANSWER = '192.0.2.99';

/** dnsmasq on ADDRESS:53 answering every name under `example` with `answer`, web.example with the server, logging queries. */
async function dnsmasq(t: Test, ns: Netns, address: string, answer: string, more: Record<string, string> = {}): Promise<() => string> {
  return (await startDnsmasq(t, ns, { 'web.example': SERVER_V4, example: answer, ...more }, address)).output;
}

const dig = (ns: Netns, name: string, type = 'A') => timed(ns, ['dig', `@${RESOLVER}`, name, type, '+short', '+time=4', '+tries=1'], 20_000);
const digStatus = async (ns: Netns, name: string): Promise<string> => /status: (\w+)/.exec((await timed(ns, ['dig', `@${RESOLVER}`, name, 'A', '+time=8', '+tries=1'], 20_000)).stdout)?.[1] ?? 'none';

function yaml(dir: string, dns: string): string {
  return `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns:
  mode: fake-ip
${dns}
route: { auto: true, table: 2022, priority: 9000, exclude: [198.51.100.0/24] }
`;
}

t.test('dns.rules pick the upstream group, fakeIp.filter answers for real, failures are warned, mappings survive kill -9', { timeout: 150_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['dig', 'curl', 'ip', 'nft', '/usr/sbin/dnsmasq'])) return;
  const dir = tempDir(t, 'dnsrules');
  const state = path.join(dir, 'state.json');
  const persist = path.join(dir, 'fakeip.json');
  const { ws, server } = await workstation(t, 'dnsrules');
  await server.sh(`ip addr add ${FIRST}/24 dev eth0; ip addr add ${SECOND}/24 dev eth0`);
  const firstLog = await dnsmasq(t, server, FIRST, '192.0.2.1');
  const secondLog = await dnsmasq(t, server, SECOND, '192.0.2.2');
  const config = yaml(
    dir,
    `  fakeIp:
    persistPath: ${persist}
    filter: [ { domainSuffix: [real.example, corp.example] }, { domain: [dead.example] }, { domainKeyword: [refusing] } ]
  upstreams: [ { address: "udp://${FIRST}:53" } ]
  groups:
    second: [ { address: "udp://${SECOND}:53" } ]
    broken: [ { address: "${REFUSING}" } ]
  rules:
    - { domainSuffix: [corp.example], upstream: second }
    - { or: [ { domain: [dead.example] }, { domainKeyword: [refusing] } ], upstream: broken }
`,
  );
  let engine = await startSluice(t, ws, dir, config, state);

  // fakeIp.filter + default group: the first dnsmasq's answer.
  const real = await dig(ws, 'host.real.example');
  t.equal(real.stdout.trim(), '192.0.2.1', `a filtered name gets the real answer of dns.upstreams (${describe(real)})`);
  // dns.rules: a corp name goes to the second group.
  const corp = await dig(ws, 'host.corp.example');
  t.equal(corp.stdout.trim(), '192.0.2.2', `a dns.rules name is answered by the second upstream (${describe(corp)})`);
  const mx = await dig(ws, 'mail.corp.example', 'MX');
  t.equal(mx.code, 0, 'a non-address query for a corp name is forwarded too');
  // dnsmasq has no MX and no upstream: it answers REFUSED, which is an upstream failure too.
  const refused = await engine.waitFor((l) => l.msg === 'DNS upstream failed' && l.upstream === `udp://${SECOND}:53`, 10_000, 'the REFUSED warning');
  t.match(refused, { level: 40, reason: 'answered rcode REFUSED' }, 'a REFUSED answer is warned about, naming the upstream');
  t.match(secondLog(), /query\[A\] host\.corp\.example/, 'the second dnsmasq saw the corp query');
  t.match(secondLog(), /query\[MX\] mail\.corp\.example/, 'and the corp MX query');
  t.notMatch(secondLog(), /real\.example/, 'the second dnsmasq never saw the other names');
  t.match(firstLog(), /query\[A\] host\.real\.example/, 'the first dnsmasq saw the default-group query');
  t.notMatch(firstLog(), /corp\.example/, 'the first dnsmasq never saw the corp names');
  // Not filtered: a fake address, and no upstream asked.
  const fake = await dig(ws, 'web.example');
  const fakeIp = fake.stdout.trim();
  t.match(fakeIp, /^198\.18\./, `an unfiltered name gets a fake address (${describe(fake)})`);
  t.notMatch(firstLog() + secondLog(), /query\[A\] web\.example/, 'a fake answer asks no upstream');
  const viaFake = await curl(ws, ['--resolve', `web.example:80:${fakeIp}`, 'http://web.example/']);
  t.equal(viaFake.code, 0, `the fake address reaches the server (${describe(viaFake)})`);

  // A failing upstream: SERVFAIL to the client, one warn line naming the upstream and the reason.
  t.equal(await digStatus(ws, 'dead.example'), 'SERVFAIL', 'a name routed to the refusing upstream gets SERVFAIL');
  const warn = await engine.waitFor((l) => l.msg === 'DNS upstream failed' && l.upstream === REFUSING, 10_000, 'the upstream failure warning');
  t.equal(warn.level, 40, 'logged at warn');
  t.equal(warn.upstream, REFUSING, 'the line names the upstream');
  t.match(String(warn.reason), /refused|unreachable|ECONNREFUSED/i, `and the reason: ${String(warn.reason)}`);
  // Many more failures within the interval: no more lines.
  const statuses = await Promise.all(Array.from({ length: 8 }, (_, i) => digStatus(ws, `n${i}.refusing.example`)));
  t.same(statuses, Array(8).fill('SERVFAIL'), 'eight more failing queries get SERVFAIL');
  await new Promise((r) => setTimeout(r, 500));
  const warns = engine.lines.filter((l: LogLine) => l.msg === 'DNS upstream failed' && l.upstream === REFUSING);
  // With worker threads (SLUICE_TEST_TUN_QUEUES=2) each worker's resolver keeps its own interval: one line per worker at most.
  const perWorker = new Set(warns.map((l: LogLine) => l.queue));
  t.ok(warns.length >= 1 && perWorker.size === warns.length && warns.length <= SUITE_QUEUES, `rate-limited: one warn line for nine failures, per worker thread (${warns.length} from queues ${[...perWorker].join(',')})`);

  // kill -9 shortly after a new mapping: it is on disk already.
  const late = await dig(ws, 'late.example');
  const lateIp = late.stdout.trim();
  t.match(lateIp, /^198\.18\./, `late.example gets a fake address (${describe(late)})`);
  await new Promise((r) => setTimeout(r, 1000));
  engine.proc.kill('SIGKILL');
  await engine.exited;
  const saved = JSON.parse(readFileSync(persist, 'utf8')) as { entries: [string, string][] };
  t.ok(saved.entries.some(([n, a]) => n === 'late.example' && a === lateIp), 'the mapping made 1 s before kill -9 is in the file');
  engine = await startSluice(t, ws, dir, config, state);
  const held = await curl(ws, ['--resolve', `web.example:80:${fakeIp}`, 'http://web.example/']);
  t.equal(held.code, 0, `after the restart, the fake address a client held still reaches the server (${describe(held)})`);
  t.match(JSON.parse(held.stdout || '{}'), { host: 'web.example' }, 'as web.example');
  const again = await dig(ws, 'web.example');
  t.equal(again.stdout.trim(), fakeIp, 'web.example maps to the same fake address after the restart');
  const lateAgain = await dig(ws, 'late.example');
  t.equal(lateAgain.stdout.trim(), lateIp, 'and so does late.example');
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
});

t.test('a DoH upstream by host name is bootstrapped from dns.hostsFile or a plain upstream, and a failing bootstrap is warned', { timeout: 150_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['dig', 'ip', 'nft', 'openssl', '/usr/sbin/dnsmasq'])) return;
  const dir = tempDir(t, 'dohboots');
  const state = path.join(dir, 'state.json');
  const { ws, server } = await workstation(t, 'dohboots', false);
  await server.sh(`ip addr add ${FIRST}/24 dev eth0`);
  // The bootstrap dnsmasq knows doh.example; the DoH server answers every A with DOH_ANSWER.
  await dnsmasq(t, server, FIRST, '192.0.2.1', { 'doh.example': SERVER_V4 });
  const cert = path.join(dir, 'doh.crt');
  const key = path.join(dir, 'doh.key');
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=doh.example', '-addext', 'subjectAltName=DNS:doh.example', '-keyout', key, '-out', cert]);
  const doh = server.spawn([process.execPath, STOP_SERVERS, '7001', SERVER_V4, DOH_ANSWER, cert, key], { env: childEnv });
  const dohOut = collectOutput(doh);
  await waitListening(server, 'tcp', 443, doh, 'the DoH server', 10_000, SERVER_V4);
  const hosts = path.join(dir, 'hosts');
  writeFileSync(hosts, `# test hosts file\n127.0.0.1 localhost\n${SERVER_V4} doh.example\n`);
  const env = { NODE_EXTRA_CA_CERTS: cert };
  const dohRequests = (): number => dohOut().split('\n').filter((l) => l.includes('"event":"doh"')).length;

  const cases: { what: string; dns: string }[] = [
    { what: 'dns.hostsFile', dns: `  hostsFile: ${hosts}\n  upstreams: [ { address: "https://doh.example/dns-query" } ]` },
    { what: 'dns.bootstrap (a plain upstream)', dns: `  hostsFile: null\n  bootstrap: [ "udp://${FIRST}:53" ]\n  upstreams: [ { address: "https://doh.example/dns-query" } ]` },
  ];
  for (const [i, c] of cases.entries()) {
    const engine = await startSluice(t, ws, dir, yaml(dir, `  fakeIp: { persistPath: null, filter: [ { domainSuffix: [example] } ] }\n${c.dns}`), state, env);
    const before = dohRequests();
    const r = await dig(ws, `q${i}.example`);
    t.equal(r.stdout.trim(), DOH_ANSWER, `${c.what}: the answer comes from the DoH server (${describe(r)})`);
    t.ok(dohRequests() > before, `${c.what}: the DoH server got the POST`);
    t.notOk(engine.lines.some((l) => l.msg === 'DNS upstream failed'), `${c.what}: no upstream failure`);
    t.equal((await engine.stop()).code, 0, `${c.what}: SIGTERM exits 0`);
  }

  // The name in neither the hosts file nor the bootstrap server: SERVFAIL, and a warning that says why.
  writeFileSync(hosts, `127.0.0.1 localhost\n`);
  const engine = spawnSluice(t, ws, dir, yaml(dir, `  fakeIp: { persistPath: null, filter: [ { domainSuffix: [example] } ] }\n  hostsFile: ${hosts}\n  upstreams: [ { address: "https://nowhere.invalid/dns-query" } ]`), state, 'sluice.yaml', env);
  await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
  t.equal(await digStatus(ws, 'q9.example'), 'SERVFAIL', 'an unresolvable DoH host gives SERVFAIL');
  const warn = await engine.waitFor((l) => l.msg === 'DNS upstream failed', 10_000, 'the upstream failure warning');
  t.equal(warn.upstream, 'https://nowhere.invalid/dns-query', 'the warning names the DoH upstream');
  t.match(String(warn.reason), /nowhere\.invalid.*not in .*hosts/, `and says the host is in no bootstrap source: ${String(warn.reason)}`);
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
});
