/**
 * gateway.mode tproxy-ebpf with IPv6 extension headers and IPv4 options:
 * the TC program walks to the transport header (bounded) and hands the
 * flow to sluice's listeners instead of forwarding it around the proxy.
 * With scapy from the client (test/fixtures/ext-headers.py):
 *   - a TCP SYN to a server port nothing listens on, behind hop-by-hop +
 *     destination options headers (and, IPv4, behind a Record Route
 *     option): answered SYN-ACK by the transparent listener (forwarded, the
 *     server would answer RST), the `listener` assignment counter rises;
 *   - a UDP datagram behind the same headers: a UDP flow line with inbound
 *     tproxy and the original destination, and the echo comes back;
 *   - a SYN behind nine destination options headers (more than the walk
 *     takes): dropped in the kernel (no answer at all, `unsupported`
 *     rises), never forwarded.
 *
 * Needs root, /dev/net/tun, ip, tc, /usr/bin/python3 with scapy, an eBPF-capable kernel.
 */
import t from 'tap';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { requireCommands, tempDir } from '../fixtures/engine/lab.js';
import { startSluice } from './workstation.js';
import { craftedPacket } from '../fixtures/ext-headers.js';
import { assignCounters, gatewayConfig, gatewayLab, startNodeScript } from './gateway-lab.js';

const CONFIG = gatewayConfig('tproxy-ebpf');

const UDP_ECHO = `const d = require('dgram'); let n = 0; for (const t of ['udp4', 'udp6']) { const s = d.createSocket({ type: t, ipv6Only: t === 'udp6' }); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(7000, () => { if (++n === 2) console.log('ready'); }); }`;




t.test('tproxy-ebpf: TCP and UDP behind IPv6 extension headers and IPv4 options are proxied, an unwalkable chain is dropped', { timeout: 150_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'tc', '/usr/bin/python3'])) return;
  const dir = tempDir(t, 'tpebext');
  const { client, gateway, server } = await gatewayLab(t, 'tpebextz');
  await startNodeScript(t, server, UDP_ECHO);
  const engine = await startSluice(t, gateway, dir, CONFIG, path.join(dir, 'state.json'));
  t.match(await engine.waitFor((l) => l.msg === 'classifier attached' || /unavailable|could not be attached/.test(String(l.msg)), 10_000, 'the classifier line'), { msg: 'classifier attached' }, 'the TC program is attached');

  for (const [ip, headers] of [
    [SERVER_V6, 'v6ext'],
    [SERVER_V4, 'v4opts'],
  ] as const) {
    const a0 = await assignCounters(engine);
    const syn = await craftedPacket(client, ['syn', ip, '81', headers]);
    t.match(syn, { reply: 'tcp', flags: 'SA' }, `SYN to ${ip}:81 with ${headers}: SYN-ACK from the transparent listener (the server has nothing on 81) (${JSON.stringify(syn)})`);
    const a1 = await assignCounters(engine);
    t.ok(a1.listener >= a0.listener + 1, `handed to the listener (${a0.listener} -> ${a1.listener})`);
    const udp = await craftedPacket(client, ['udp', ip, '7000', headers]);
    t.match(udp, { reply: 'udp', payload: 'ping' }, `UDP to ${ip}:7000 with ${headers}: the echo comes back (${JSON.stringify(udp)})`);
    const a2 = await assignCounters(engine);
    t.ok(a2.listener >= a1.listener + 1, `the datagram was handed to the UDP listener (${a1.listener} -> ${a2.listener})`);
  }

  const a3 = await assignCounters(engine);
  const long = await craftedPacket(client, ['syn', SERVER_V6, '80', 'v6long']);
  t.equal(long.reply, null, `a SYN behind nine destination options headers gets no answer (${JSON.stringify(long)})`);
  const a4 = await assignCounters(engine);
  t.ok(a4.unsupported >= a3.unsupported + 1, `dropped as unsupported (${a3.unsupported} -> ${a4.unsupported})`);
  t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
  const udpFlows = engine.flows().filter((f) => f.network === 'udp');
  t.ok(udpFlows.some((f) => f.inbound === 'tproxy' && f.dst === `[${SERVER_V6}]:7000`), `an IPv6 UDP flow line with inbound tproxy to [${SERVER_V6}]:7000`);
  t.ok(udpFlows.some((f) => f.inbound === 'tproxy' && f.dst === `${SERVER_V4}:7000`), `an IPv4 one to ${SERVER_V4}:7000`);
});
