/**
 * Endpoints no relay can use, at the stack's entry (issue 12 item 1): UDP
 * to port 0 is answered with ICMP port unreachable (RFC 1122 4.1.3.1) and
 * never reaches the application; UDP from port 0 is dropped; a SYN to or
 * from port 0 gets a RST (RFC 9293 3.10.7.1); multicast, broadcast and
 * unspecified sources or destinations are dropped. Each is counted, and a
 * session handler that throws costs its session only.
 */
import t from 'tap';
import { Stack } from '../../src/stack.js';
import type { UdpSession } from '../../src/udp/session.js';
import { TCP_RST, TCP_SYN } from '../../src/wire/tcp.js';
import { sealIpv4, sealIpv6 } from '../wire/fixtures.js';
import { MemoryLink, settle } from './memory-link.js';
import { readTcp, tcpSegment, udpDatagram } from './packets.js';

function lab(t: { teardown(fn: () => void): void }, onUdp: (s: UdpSession) => void = () => {}) {
  const link = new MemoryLink(1500);
  const flows: number[] = [];
  const sessions: UdpSession[] = [];
  const stack = new Stack(link, {
    onTcpFlow: (req) => {
      flows.push(req.localPort);
      req.reset();
    },
    onUdpSession: (s) => {
      sessions.push(s);
      onUdp(s);
    },
  });
  stack.start();
  t.teardown(() => stack.close());
  return { link, stack, flows, sessions };
}

/** The packet with its destination (or source) address replaced, checksums redone. */
function readdress(pkt: Uint8Array, which: 'src' | 'dst', addr: number[]): Uint8Array {
  const v = pkt[0]! >> 4;
  const at = v === 4 ? (which === 'src' ? 12 : 16) : which === 'src' ? 8 : 24;
  pkt.set(addr, at);
  return v === 4 ? sealIpv4(pkt) : sealIpv6(pkt);
}

for (const v of [4, 6] as const) {
  t.test(`IPv${v}: UDP to port 0 gets ICMP port unreachable and no session`, async (t) => {
    const { link, stack, sessions } = lab(t);
    link.inject(udpDatagram(v, 1234, 0, Buffer.from('x')));
    await settle();
    const out = link.drain();
    t.equal(out.length, 1, 'one packet back');
    if (v === 4) t.same([out[0]![9], out[0]![20], out[0]![21]], [1, 3, 3], 'ICMP destination unreachable, port');
    else t.same([out[0]![6], out[0]![40], out[0]![41]], [58, 1, 4], 'ICMPv6 destination unreachable, port');
    t.equal(sessions.length, 0, 'the application never saw it');
    t.equal(stack.stats.drops.port_zero, 1, 'counted as port_zero');
  });

  t.test(`IPv${v}: UDP from port 0 is dropped silently`, async (t) => {
    const { link, stack, sessions } = lab(t);
    link.inject(udpDatagram(v, 0, 53, Buffer.from('x')));
    await settle();
    t.equal(link.drain().length, 0, 'nothing back');
    t.equal(sessions.length, 0, 'no session');
    t.equal(stack.stats.drops.port_zero, 1, 'counted');
  });

  for (const [what, spec] of [
    ['to', { dstPort: 0 }],
    ['from', { srcPort: 0 }],
  ] as const) {
    t.test(`IPv${v}: a SYN ${what} port 0 gets a RST and never reaches the application`, async (t) => {
      const { link, stack, flows } = lab(t);
      link.inject(tcpSegment({ v, seq: 77, flags: TCP_SYN, ...spec }));
      await settle();
      const out = link.drain();
      t.equal(out.length, 1, 'one packet back');
      const rst = readTcp(out[0]!);
      t.ok((rst.flags & TCP_RST) !== 0, 'a RST');
      t.equal(rst.ack, 78, 'acknowledging the SYN (RFC 9293 3.10.7.1)');
      t.equal(flows.length, 0, 'no flow request');
      t.equal(stack.stats.drops.port_zero, 1, 'counted');
    });
  }

  const odd: Array<[string, 'src' | 'dst', number[]]> =
    v === 4
      ? [
          ['multicast destination', 'dst', [224, 0, 0, 251]],
          ['broadcast destination', 'dst', [255, 255, 255, 255]],
          ['unspecified destination', 'dst', [0, 0, 0, 0]],
          ['multicast source', 'src', [239, 1, 2, 3]],
          ['unspecified source', 'src', [0, 0, 0, 0]],
        ]
      : [
          ['multicast destination', 'dst', [0xff, 0x02, ...new Array(13).fill(0), 1]],
          ['unspecified destination', 'dst', new Array(16).fill(0)],
          ['multicast source', 'src', [0xff, 0x05, ...new Array(13).fill(0), 2]],
          ['IPv4-mapped broadcast destination', 'dst', [...new Array(10).fill(0), 0xff, 0xff, 255, 255, 255, 255]],
        ];
  for (const [what, which, addr] of odd) {
    t.test(`IPv${v}: UDP and a SYN with a ${what} are dropped, counted`, async (t) => {
      const { link, stack, flows, sessions } = lab(t);
      link.inject(readdress(udpDatagram(v, 1234, 53, Buffer.from('x')), which, addr));
      link.inject(readdress(tcpSegment({ v, seq: 1, flags: TCP_SYN }), which, addr));
      await settle();
      t.equal(link.drain().length, 0, 'nothing back');
      t.equal(sessions.length + flows.length, 0, 'the application saw neither');
      t.equal(stack.stats.drops.bad_address, 2, 'both counted as bad_address');
    });
  }
}

t.test('a UDP session handler that throws costs that session only', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.message);
  process.on('warning', onWarning);
  t.teardown(() => void process.off('warning', onWarning));
  let calls = 0;
  const { link, stack, sessions } = lab(t, () => {
    if (++calls === 1) throw new Error('handler bug');
  });
  link.inject(udpDatagram(4, 1111, 53, Buffer.from('a')));
  link.inject(udpDatagram(4, 2222, 53, Buffer.from('b')));
  await settle();
  t.equal(sessions.length, 2, 'both sessions were offered');
  t.ok(sessions[0]!.closed, 'the one whose handler threw is closed');
  t.notOk(sessions[1]!.closed, 'the other is open');
  t.equal(stack.stats.drops.handler_error, 1, 'counted as handler_error');
  t.equal(stack.stats.drops.internal_error, 0, 'not an internal error');
  await new Promise((r) => setImmediate(r));
  t.match(warnings.join('\n'), /onUdpSession handler threw: handler bug/, 'and said so');
});
