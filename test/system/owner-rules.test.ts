/**
 * uid / processName / processPath rules in workstation mode (route.auto):
 * the owner of each flow's client socket is found with NETLINK_SOCK_DIAG
 * and /proc, so a curl run as uid 4242 (setpriv) is rejected while root's
 * passes, and a copy of curl under another name is rejected while curl
 * passes; IPv4, IPv6, a fake-IP destination (the socket's remote is the
 * fake address) and a UDP session. The flow lines carry uid, process and
 * processPath.
 *
 * Needs root, /dev/net/tun, curl, setpriv, dig, dnsmasq, ip, nft.
 */
import t from 'tap';
import path from 'node:path';
import { chmodSync, copyFileSync, readFileSync } from 'node:fs';
import { requireRoot } from '../harness/netns.js';
import { curl, describe, requireCommands, startDnsmasq, tempDir, timed, type FlowLine } from '../fixtures/engine/lab.js';
import { config, SERVER_V4, SERVER_V6, startSluice, workstation } from './workstation.js';

const OTHER_UID = 4242;
const setpriv = ['setpriv', '--reuid', String(OTHER_UID), '--regid', String(OTHER_UID), '--clear-groups'];

const rules = `
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
rules:
  - { uid: [${OTHER_UID}], outbound: block }
  - { processName: [fetchy], outbound: block }
  - { and: [ { processPath: [/usr/bin/curl] }, { port: [9] } ], outbound: block }
`;

/**
 * A Python UDP client: one datagram, on a connected socket (then the error
 * the ICMP brings is printed) or an unconnected one (sendto; such a socket
 * hears no ICMP, so it only waits).
 */
const UDP_CLIENT = `
import socket, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
if mode == "connect":
    s.connect((host, port))
    s.send(b"ping")
else:
    s.sendto(b"ping", (host, port))
try:
    s.recv(100)
    print("reply")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
`;

t.test('uid and processName rules decide by the owner of the client socket', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'setpriv', 'dig', 'ip', 'nft', '/usr/sbin/dnsmasq'])) return;
  const dir = tempDir(t, 'ownerrul');
  chmodSync(dir, 0o755);
  const fetchy = path.join(dir, 'fetchy');
  copyFileSync('/usr/bin/curl', fetchy);
  chmodSync(fetchy, 0o755);
  const { ws, server } = await workstation(t, 'ownerrul');
  await startDnsmasq(t, server, { 'web.example': SERVER_V4 });
  const engine = await startSluice(t, ws, dir, config(rules), path.join(dir, 'state.json'));
  await engine.waitFor((l) => l.msg === 'auto-route installed', 5000, '"auto-route installed"');

  const flowTo = async (dst: string, n: number): Promise<FlowLine> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const f = engine.flows().filter((x) => x.dst === dst);
      if (f.length >= n) return f[n - 1]!;
      if (Date.now() > deadline) throw new Error(`no flow line #${n} to ${dst}\n${engine.transcript()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const cases: { what: string; argv: string[]; target: string; dst: string }[] = [
    { what: 'IPv4', argv: [], target: `http://${SERVER_V4}/`, dst: `${SERVER_V4}:80` },
    { what: 'IPv6', argv: ['-g'], target: `http://[${SERVER_V6}]/`, dst: `[${SERVER_V6}]:80` },
  ];
  for (const c of cases) {
    const root = await curl(ws, [...c.argv, c.target]);
    t.equal(root.code, 0, `${c.what}: root's curl passes (${describe(root)})`);
    const rootFlow = await flowTo(c.dst, 1);
    t.match(rootFlow, { uid: 0, process: 'curl', processPath: '/usr/bin/curl', outbound: 'direct' }, `${c.what}: the flow line names root's curl`);

    const other = await timed(ws, [...setpriv, 'curl', '-sS', '--max-time', '10', ...c.argv, c.target], 30_000);
    t.not(other.code, 0, `${c.what}: curl as uid ${OTHER_UID} is refused (${describe(other)})`);
    const otherFlow = await flowTo(c.dst, 2);
    t.match(otherFlow, { uid: OTHER_UID, process: 'curl', outbound: 'block', rule: 0, close: 'rejected' }, `${c.what}: the flow line names uid ${OTHER_UID} and the uid rule`);

    const renamed = await timed(ws, [fetchy, '-sS', '--max-time', '10', ...c.argv, c.target], 30_000);
    t.not(renamed.code, 0, `${c.what}: the copy of curl named fetchy is refused (${describe(renamed)})`);
    const renamedFlow = await flowTo(c.dst, 3);
    t.match(renamedFlow, { uid: 0, process: 'fetchy', processPath: fetchy, outbound: 'block', rule: 1 }, `${c.what}: the flow line names fetchy and the processName rule`);
  }

  // The control API shows the owner of a live flow (GET /connections, Clash metadata; GET /v1/flows).
  const token = readFileSync(path.join(dir, 'api-secret'), 'utf8').trim();
  const slow = ws.spawn([...setpriv.map((a) => (a === String(OTHER_UID) ? '4343' : a)), 'curl', '-sS', '--limit-rate', '50K', '-o', '/dev/null', `http://${SERVER_V4}/bytes/100000000`]);
  t.teardown(() => {
    if (slow.exitCode === null) slow.kill('SIGKILL');
  });
  let meta: Record<string, unknown> | null = null;
  let v1: Record<string, unknown> | null = null;
  for (let i = 0; i < 100 && (meta === null || v1 === null); i++) {
    const r = await timed(ws, ['curl', '-sS', '-m', '5', '-H', `Authorization: Bearer ${token}`, 'http://127.0.0.1:9090/connections'], 15_000);
    const conns = (JSON.parse(r.stdout || '{}') as { connections?: { metadata: Record<string, unknown> }[] }).connections ?? [];
    meta = conns.map((c) => c.metadata).find((m) => m.uid === 4343) ?? null;
    const f = await timed(ws, ['curl', '-sS', '-m', '5', '-H', `Authorization: Bearer ${token}`, 'http://127.0.0.1:9090/v1/flows'], 15_000);
    const flows = (JSON.parse(f.stdout || '{}') as { flows?: Record<string, unknown>[] }).flows ?? [];
    v1 = flows.find((x) => x.uid === 4343) ?? null;
    if (meta === null || v1 === null) await new Promise((r) => setTimeout(r, 100));
  }
  t.match(meta, { uid: 4343, process: 'curl', processPath: '/usr/bin/curl', destinationIP: SERVER_V4 }, 'GET /connections: the live flow\'s metadata names uid 4343 and curl');
  t.match(v1, { uid: 4343, process: 'curl', processPath: '/usr/bin/curl' }, 'GET /v1/flows too');
  slow.kill('SIGKILL');

  // A fake-IP destination: the client socket's remote end is the fake address, as the TUN sees it.
  const q = await timed(ws, ['dig', '@203.0.113.53', 'web.example', 'A', '+short', '+time=3', '+tries=1']);
  const fake = q.stdout.trim();
  t.match(fake, /^198\.18\./, `sluice answers web.example with a fake IP (${describe(q)})`);
  const resolveArg = ['--resolve', `web.example:80:${fake}`, 'http://web.example/'];
  const rootFake = await curl(ws, resolveArg);
  t.equal(rootFake.code, 0, `root's curl to the fake IP passes (${describe(rootFake)})`);
  t.match(await flowTo(`${fake}:80`, 1), { uid: 0, process: 'curl', domain: 'web.example', outbound: 'direct' }, 'the fake-IP flow has its owner');
  const otherFake = await timed(ws, [...setpriv, 'curl', '-sS', '--max-time', '10', ...resolveArg], 30_000);
  t.not(otherFake.code, 0, `curl as uid ${OTHER_UID} to the fake IP is refused (${describe(otherFake)})`);
  t.match(await flowTo(`${fake}:80`, 2), { uid: OTHER_UID, outbound: 'block' }, 'the fake-IP flow of uid 4242 went to block');

  // A composite rule (processPath and port): curl to port 9 is refused by rule 2, not by the server.
  const port9 = await curl(ws, [`http://${SERVER_V4}:9/`], 10);
  t.not(port9.code, 0, `root's curl to port 9 is refused (${describe(port9)})`);
  t.match(await flowTo(`${SERVER_V4}:9`, 1), { rule: 2, outbound: 'block', processPath: '/usr/bin/curl' }, 'processPath and port matched together');

  // UDP: the socket of a session's first datagram is looked up the same way, connected or not, IPv4 and IPv6.
  for (const [what, host, dst] of [
    ['IPv4', SERVER_V4, `${SERVER_V4}:7777`],
    ['IPv6', SERVER_V6, `[${SERVER_V6}]:7777`],
  ] as const) {
    const udp = await timed(ws, [...setpriv, '/usr/bin/python3', '-c', UDP_CLIENT, host, '7777', 'connect'], 30_000);
    t.equal(udp.stdout.trim(), 'refused', `${what}: a UDP datagram from uid ${OTHER_UID} is refused with ICMP port unreachable (${describe(udp)})`);
    t.match(await flowTo(dst, 1), { network: 'udp', uid: OTHER_UID, process: 'python3', outbound: 'block', close: 'rejected' }, `${what}: the UDP flow line names uid 4242 and python3`);
    const loose = await timed(ws, [...setpriv, '/usr/bin/python3', '-c', UDP_CLIENT, host, '7777', 'sendto'], 30_000);
    t.equal(loose.stdout.trim(), 'timeout', `${what}: the unconnected socket hears nothing back (${describe(loose)})`);
    t.match(await flowTo(dst, 2), { network: 'udp', uid: OTHER_UID, process: 'python3', outbound: 'block' }, `${what}: an unconnected (sendto) UDP socket is found too`);
  }

  const stopped = await engine.stop();
  t.equal(stopped.code, 0, 'SIGTERM exits 0');
  const stopping = engine.lines.find((l) => l.msg === 'stopping') as { socketOwner?: { lookups: number; notFound: number; procScanned: number } } | undefined;
  t.ok((stopping?.socketOwner?.lookups ?? 0) >= 14, `the stopping line counts the owner lookups: ${JSON.stringify(stopping?.socketOwner)}`);
});

t.test('connect time through the TUN with and without owner lookups (figures only)', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'ip', 'nft'])) return;
  const dir = tempDir(t, 'ownertim');
  const { ws } = await workstation(t, 'ownertim');
  const median = async (): Promise<number> => {
    const ms: number[] = [];
    for (let i = 0; i < 15; i++) {
      const r = await curl(ws, ['-o', '/dev/null', '-w', '%{time_connect}', `http://${SERVER_V4}/`]);
      t.equal(r.code, 0, `curl ${i} passes`);
      ms.push(Number(r.stdout) * 1000);
    }
    ms.sort((a, b) => a - b);
    return ms[7]!;
  };
  const plain = `
outbounds: [ { name: direct, type: direct }, { name: block, type: reject } ]
rules: [ { port: [9], outbound: block } ]
`;
  let engine = await startSluice(t, ws, dir, config(plain), path.join(dir, 'state.json'));
  const without = await median();
  t.equal((await engine.stop()).code, 0);
  engine = await startSluice(t, ws, dir, config(rules), path.join(dir, 'state.json'));
  const withOwner = await median();
  t.ok(engine.flows().every((f) => f.uid === 0 && f.process === 'curl'), 'every flow had its owner looked up');
  t.equal((await engine.stop()).code, 0);
  t.comment(`median curl time_connect over 15 connections: ${without.toFixed(2)} ms without owner rules, ${withOwner.toFixed(2)} ms with them (a new curl process each time: a /proc walk per flow)`);
});
