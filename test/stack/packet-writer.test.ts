/**
 * The packet writer's one IPv6 emit repr is shared by every packet it
 * builds. A TCP segment must copy its flow's addresses into that repr, not
 * alias them: the next ICMPv6 error or echo reply writes its own addresses
 * into the repr in place, and with an alias it wrote them into the flow's
 * key (5fc3447 fixed that; this test fails on the aliasing code).
 */
import t from 'tap';
import { PacketWriter, type FlowAddresses } from '../../src/stack/packet-writer.js';
import { newTcpRepr, TCP_ACK } from '../../src/wire/tcp.js';
import { MemoryLink } from './memory-link.js';

function v6(text: string): Uint8Array {
  // Only the forms used here: 2001:db8:<group>::<last>.
  const [head, tail] = text.split('::');
  const out = new Uint8Array(16);
  const groups = head!.split(':').map((g) => parseInt(g, 16));
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  const last = parseInt(tail!, 16);
  out[14] = last >> 8;
  out[15] = last & 0xff;
  return out;
}

const CLIENT = v6('2001:db8:1::10');
const SERVER = v6('2001:db8:2::20');
const ROUTER = v6('2001:db8:3::30');

t.test('an IPv6 TCP segment leaves its flow addresses intact when ICMPv6 packets follow', (t) => {
  const link = new MemoryLink(1500);
  const writer = new PacketWriter(link, { tso: false });
  const flow: FlowAddresses = { family: 6, srcAddr: CLIENT.slice(), dstAddr: SERVER.slice(), src4: 0, dst4: 0 };
  const seg = newTcpRepr();
  seg.srcPort = 443;
  seg.dstPort = 40000;
  seg.flags = TCP_ACK;
  seg.window = 1000;
  writer.tcp(flow, seg, null, 0, 0, 1440);

  // A packet too big from a router beyond sluice about some other packet
  // of the client's: its source is the router, its destination the client.
  const quoted = new Uint8Array(48);
  quoted[0] = 0x60;
  quoted[6] = 17;
  quoted.set(CLIENT, 8);
  quoted.set(v6('2001:db8:4::40'), 24);
  writer.icmpErrorFrom(6, 2, 0, 1280, ROUTER, 0, quoted, 0, quoted.length);
  writer.tcp(flow, seg, null, 0, 0, 1440);

  t.same([...flow.srcAddr], [...CLIENT], "the flow's client address is unchanged");
  t.same([...flow.dstAddr], [...SERVER], "the flow's server address is unchanged");
  const [first, error, second] = link.drain();
  t.same([...first!.subarray(8, 24)], [...SERVER], 'the first segment comes from the server');
  t.same([...first!.subarray(24, 40)], [...CLIENT], 'and goes to the client');
  t.same([...error!.subarray(8, 24)], [...ROUTER], 'the ICMPv6 error comes from the router');
  t.same([...error!.subarray(24, 40)], [...CLIENT], 'and goes to the client');
  t.same([...second!.subarray(8, 24)], [...SERVER], 'the next segment still comes from the server');
  t.same([...second!.subarray(24, 40)], [...CLIENT], 'and still goes to the client');
  t.end();
});
