/**
 * Honest ping through `sluice run` (src/ip/echo-relay.ts), with the real
 * ping, ping -6 and traceroute -I in four namespaces:
 *
 *   client ──── gateway (sluice, TUN) ──── router ──── far
 *   192.0.2.2   192.0.2.1 | 198.51.100.1   198.51.100.2 | 203.0.113.1 (MTU 1280)   203.0.113.2
 *   2001:db8:c::2  ::1 | 2001:db8:51::1     2001:db8:51::2 | 2001:db8:5::1          2001:db8:5::2
 *
 * Everything the client sends is steered into the TUN. Shown: a ping
 * reaches `far` (its nftables counter rises) and its replies come back; when
 * `far` drops echo requests the client gets no reply; an address nobody owns
 * gets no reply; a DF request too big for the router's 1280-byte link gets
 * the router's "fragmentation needed" / "packet too big" with mtu 1280;
 * `ping -s 3000` works (reassembled, forwarded, the reply fragmented into
 * the TUN); traceroute -I and -U list the real hops; `icmp.echo: reply` answers
 * locally even for an address nobody owns; `unreachable` refuses.
 *
 * Needs root, /dev/net/tun, ping, traceroute, nft.
 */
import t from 'tap';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { TUN, createLab, requireCommands, startDnsmasq, startEngine, steer, tempDir, timed, type Timed } from '../fixtures/engine/lab.js';

const CLIENT4 = '192.0.2.2';
const GW_LAN4 = '192.0.2.1';
const GW_WAN4 = '198.51.100.1';
const ROUTER4 = '198.51.100.2';
const FAR4 = '203.0.113.2';
const NOBODY4 = '203.0.113.99';
const CLIENT6 = '2001:db8:c::2';
const GW_LAN6 = '2001:db8:c::1';
const GW_WAN6 = '2001:db8:51::1';
const ROUTER6 = '2001:db8:51::2';
const FAR6 = '2001:db8:5::2';
const NOBODY6 = '2001:db8:5::99';

const config = (icmp: string): string => `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { hijack: false, mode: real-ip }
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
rules:
  - { ipCidr: [203.0.113.128/25], outbound: block }
final: direct
icmp: ${icmp}
`;

interface Lab4 {
  client: Netns;
  gateway: Netns;
  router: Netns;
  far: Netns;
}

async function fourNamespaces(t: Test, tag = 'icmpecho', wanMtu = 1500): Promise<Lab4> {
  const lab = await createLab(t, tag);
  const client = await lab.netns('client');
  const gateway = await lab.netns('gateway');
  const router = await lab.netns('router');
  const far = await lab.netns('far');
  await lab.veth(client, 'eth0', gateway, 'lan0', { a: [`${CLIENT4}/24`, `${CLIENT6}/64`], b: [`${GW_LAN4}/24`, `${GW_LAN6}/64`] });
  await lab.veth(gateway, 'wan0', router, 'r0', { a: [`${GW_WAN4}/24`, `${GW_WAN6}/64`], b: [`${ROUTER4}/24`, `${ROUTER6}/64`], mtu: wanMtu });
  await lab.veth(router, 'r1', far, 'eth0', { a: ['203.0.113.1/24', '2001:db8:5::1/64'], b: [`${FAR4}/24`, `${FAR6}/64`], mtu: 1280 });
  await client.ipBatch([`route add default via ${GW_LAN4}`, `route add ::/0 via ${GW_LAN6}`]);
  await gateway.ipBatch([`route add default via ${ROUTER4}`, `route add ::/0 via ${ROUTER6}`]);
  await router.ipBatch([`route add 192.0.2.0/24 via ${GW_WAN4}`, `route add 2001:db8:c::/64 via ${GW_WAN6}`]);
  await far.ipBatch(['route add default via 203.0.113.1', 'route add ::/0 via 2001:db8:5::1']);
  for (const ns of [gateway, router]) await ns.sh('sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1');
  // The router answers every probe: its per-destination ICMP rate limit
  // (1 s) would turn a traceroute hop into "*" right after another error.
  await router.sh('sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0');
  // far counts the echo requests it receives, and drops them while the "deaf" set says so.
  await far.exec(['nft', '-f', '-'], {
    input: [
      'table inet icmptest {',
      '  chain input {',
      '    type filter hook input priority 0; policy accept;',
      '    icmp type echo-request counter comment "echo4"',
      '    icmpv6 type echo-request counter comment "echo6"',
      '  }',
      '}',
      '',
    ].join('\n'),
  });
  return { client, gateway, router, far };
}

async function echoCount(far: Netns, comment: string): Promise<number> {
  const doc = JSON.parse(await far.sh('nft -j list table inet icmptest')) as { nftables: Array<{ rule?: { comment?: string; expr: Array<{ counter?: { packets: number } }> } }> };
  for (const item of doc.nftables) {
    if (item.rule?.comment !== comment) continue;
    for (const e of item.rule.expr) if (e.counter) return e.counter.packets;
  }
  throw new Error(`no nft rule ${comment}`);
}

/** ping with a hard deadline (-w) so a lost reply never hangs the test. */
function ping(ns: Netns, family: 4 | 6, target: string, extra: string[] = [], count = 2): Promise<Timed> {
  return timed(ns, ['ping', family === 6 ? '-6' : '-4', '-n', '-c', String(count), '-i', '0.5', '-W', '3', '-w', String(count + 6), ...extra, target], 30_000);
}

const show = (r: Timed): string => `exit ${r.code}: ${(r.stdout + r.stderr).trim().split('\n').slice(-4).join(' | ')}`;

t.test('ping and traceroute through sluice reach the real hosts (icmp.echo: forward)', { timeout: 240_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ping', 'traceroute', 'nft'])) return;
  const dir = tempDir(t, 'icmpecho');
  const { client, gateway, far } = await fourNamespaces(t);
  const engine = await startEngine(t, gateway, dir, config('{ echo: forward }'));
  await steer(gateway, TUN);

  for (const family of [4, 6] as const) {
    const target = family === 4 ? FAR4 : FAR6;
    const counter = family === 4 ? 'echo4' : 'echo6';

    // First, while the gateway has no path MTU for far cached: a DF request
    // too big for the router's 1280-byte link. The router's error reaches
    // the client, from the router, with its MTU.
    const big = await ping(client, family, target, family === 4 ? ['-M', 'do', '-s', '1400'] : ['-s', '1400'], 1);
    t.not(big.code, 0, `v${family} DF 1428/1448 bytes: no reply (${show(big)})`);
    t.match(big.stdout, family === 4 ? /From 198\.51\.100\.2 .*Frag needed and DF set \(mtu = 1280\)/ : /From 2001:db8:51::2 .*Packet too big: mtu=1280/, `v${family}: the router's too-big error with mtu 1280, relayed`);

    const before = await echoCount(far, counter);
    const ok = await ping(client, family, target, [], 3);
    t.equal(ok.code, 0, `v${family} ping far through sluice (${show(ok)})`);
    t.match(ok.stdout, /3 received/, `v${family}: every reply came back`);
    const after = await echoCount(far, counter);
    t.ok(after - before >= 3, `v${family}: far received the echo requests itself (${after - before})`);

    const huge = await ping(client, family, target, ['-s', '3000'], 2);
    t.equal(huge.code, 0, `v${family} ping -s 3000: reassembled, forwarded, the reply fragmented back (${show(huge)})`);

    // far stops answering: so does the client's ping (the answers were far's, not sluice's).
    await far.sh(`nft insert rule inet icmptest input ${family === 4 ? 'icmp' : 'icmpv6'} type echo-request drop comment '"deaf"'`);
    const deaf = await ping(client, family, target, [], 2);
    t.not(deaf.code, 0, `v${family}: far drops echo requests, the client gets no reply (${show(deaf)})`);
    t.match(deaf.stdout, /0 received/, `v${family}: nothing received`);
    const handle = (await far.sh('nft -a list chain inet icmptest input')).match(/"deaf" # handle (\d+)/)?.[1];
    await far.sh(`nft delete rule inet icmptest input handle ${handle}`);

    const nobody = await ping(client, family, family === 4 ? NOBODY4 : NOBODY6, [], 1);
    t.not(nobody.code, 0, `v${family}: an address nobody owns gets no echo reply (${show(nobody)})`);
    t.notMatch(nobody.stdout, /bytes from/, `v${family}: no reply was faked`);

    // The policy rejects 203.0.113.128/25 (v4 only): admin prohibited, at once.
    if (family === 4) {
      const refused = await ping(client, 4, '203.0.113.200', [], 1);
      t.match(refused.stdout, /Packet filtered|Communication administratively prohibited/, `a rejected destination: admin prohibited (${show(refused)})`);
    }

    const hops = family === 4 ? [GW_LAN4, ROUTER4, FAR4] : [GW_LAN6, ROUTER6, FAR6];
    // -I: echo requests with rising TTLs; -U: UDP datagrams to port 53 (nobody listens on far: port unreachable ends it).
    for (const method of ['-I', '-U'] as const) {
      const tr = await timed(client, ['traceroute', family === 6 ? '-6' : '-4', method, '-n', '-q', '1', '-w', '3', '-m', '6', target], 60_000);
      const listed = tr.stdout
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/)[1])
        .filter((h): h is string => h !== undefined);
      t.same(listed, hops, `v${family} traceroute ${method} lists the real hops (${tr.stdout.trim().replace(/\n/g, ' | ')})`);
    }
  }

  t.equal((await engine.stop()).code, 0, 'SIGTERM: exit 0');
});

t.test('icmp.echo: reply answers here; unreachable refuses', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ping', 'nft'])) return;
  const dir = tempDir(t, 'icmpreply');
  const { client, gateway } = await fourNamespaces(t);
  let engine = await startEngine(t, gateway, dir, config('{ echo: reply }'));
  await steer(gateway, TUN);
  const local = await ping(client, 4, NOBODY4, [], 1);
  t.equal(local.code, 0, `reply: even an address nobody owns answers (sluice does) (${show(local)})`);
  t.equal((await engine.stop()).code, 0, 'SIGTERM: exit 0');
  engine = await startEngine(t, gateway, dir, config('{ echo: unreachable }'), 'sluice2.yaml');
  // The TUN is new: its routes in the steering table went with the old one.
  await gateway.ipBatch(['route add 0.0.0.0/0 dev sl0 table 100', 'route add ::/0 dev sl0 table 100']);
  const refused = await ping(client, 6, FAR6, [], 1);
  t.not(refused.code, 0, `unreachable: no reply (${show(refused)})`);
  t.match(refused.stdout, /Administratively prohibited|Destination unreachable/i, 'the client is told at once');
  t.equal((await engine.stop()).code, 0, 'SIGTERM: exit 0');
});

/**
 * A client UDP socket with path MTU discovery on (IP_PMTUDISC_DO: DF set,
 * never fragmented) sends `sizes` one after the other to far:9999 and
 * prints the path MTU its kernel learnt after each (IP_MTU / IPV6_MTU): it
 * changes only if a "fragmentation needed" / "packet too big" reached it.
 * The kernel reports that error once more, on the next send: then the
 * datagram is sent again.
 */
const PMTU_CLIENT = `
import socket, sys, time
fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
else:
    s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
s.connect((sys.argv[2], 9999))
out = []
for size in map(int, sys.argv[3:]):
    for attempt in range(2):
        try:
            s.send(b'x' * size)
            break
        except OSError:
            pass  # the previous datagram's ICMP error, reported once on a connected socket (EMSGSIZE)
    mtu = 0
    for _ in range(50):
        time.sleep(0.1)
        mtu = s.getsockopt(socket.IPPROTO_IPV6, 24) if fam == socket.AF_INET6 else s.getsockopt(socket.IPPROTO_IP, 14)
        if mtu < 1500:
            break
    out.append(str(mtu))
print(' '.join(out))
`;

t.test('a DF UDP datagram too big for the path beyond sluice gets fragmentation needed / packet too big', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['python3', 'nft'])) return;
  const dir = tempDir(t, 'udpmtu');
  // gateway -- router at 1400: sluice's own hop is where 1428 bytes stop fitting; router -- far at 1280.
  const { client, gateway } = await fourNamespaces(t, 'udptobig', 1400);
  const engine = await startEngine(t, gateway, dir, config('{ echo: forward }'));
  await steer(gateway, TUN);
  for (const family of [4, 6] as const) {
    // 1400 bytes of payload: past the gateway's 1400-byte link, so sluice says
    // so itself (mtu 1400); then 1300: fits that link but not the router's
    // 1280-byte one, and the router's own error is relayed (mtu 1280).
    const r = await timed(client, ['python3', '-c', PMTU_CLIENT, String(family), family === 4 ? FAR4 : FAR6, '1400', '1300'], 30_000);
    t.equal(r.code, 0, `v${family} client ran (${r.stderr.trim()})`);
    t.equal(r.stdout.trim(), '1400 1280', `v${family}: the client learnt mtu 1400 from sluice's hop, then 1280 from the router`);
  }
  t.equal((await engine.stop()).code, 0, 'SIGTERM: exit 0');
});

t.test('a fake-IP destination sent direct: the name\'s real address is pinged, the replies come from the fake IP', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ping', 'dig', 'nft'])) return;
  const dir = tempDir(t, 'icmpfake');
  const { client, gateway, far } = await fourNamespaces(t, 'icmpfake');
  await startDnsmasq(t, far, { 'far.example': FAR4 }, FAR4);
  const engine = await startEngine(
    t,
    gateway,
    dir,
    `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: fake-ip, fakeIp: { persistPath: null }, upstreams: [ { address: "udp://${FAR4}:53" } ] }
final: direct
`,
  );
  await steer(gateway, TUN);
  const fake = (await timed(client, ['dig', '+short', '+time=3', '+tries=2', '@198.51.100.53', 'far.example', 'A'])).stdout.trim();
  t.match(fake, /^198\.18\./, `the name gets a fake IP (${fake})`);
  const before = await echoCount(far, 'echo4');
  // The first request starts the name's resolution and goes unanswered; the next ones are forwarded.
  const r = await ping(client, 4, fake, [], 4);
  t.match(r.stdout, new RegExp(`bytes from ${fake.replace(/\./g, '\\.')}`), `replies come from the fake IP (${show(r)})`);
  t.ok(/[234] received/.test(r.stdout), 'at least two of four answered');
  t.ok((await echoCount(far, 'echo4')) - before >= 2, 'far itself received them');
  t.equal((await engine.stop()).code, 0, 'SIGTERM: exit 0');
});
