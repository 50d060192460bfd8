/**
 * A TCP flow's addresses (src/ip/flow-addresses.ts setFlowAddresses,
 * addressBytesOf, endpointsOf) and its log text (src/engine/flow-info.ts
 * hostPort): IPv4 forms shared by every flow of the address (issue 10),
 * equal to what a flow of its own would hold; IPv6 in arrays of the flow's
 * own; the text flat and exact for every port width.
 */
import t from 'tap';
import { addressBytesOf, endpointsOf, setFlowAddresses } from '../../src/ip/flow-addresses.js';
import { hostPort } from '../../src/engine/flow-info.js';

function fields(): { srcAddr: Uint8Array; dstAddr: Uint8Array; src4: number; dst4: number } {
  return { srcAddr: new Uint8Array(0), dstAddr: new Uint8Array(0), src4: -1, dst4: -1 };
}

t.test('IPv4: the mapped keys and 4-byte forms are shared per address and hold its bytes', async (t) => {
  const pkt = Uint8Array.from([192, 0, 2, 1, 198, 51, 100, 200]);
  const a = fields();
  const b = fields();
  setFlowAddresses(4, pkt, 0, 4, a);
  setFlowAddresses(4, pkt, 0, 4, b);
  t.same([...a.srcAddr], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1], 'source as IPv4-mapped IPv6');
  t.same([...a.dstAddr], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 200], 'destination as IPv4-mapped IPv6');
  t.equal(a.srcAddr, b.srcAddr, 'two flows of one source share its key');
  t.equal(a.dstAddr, b.dstAddr, 'and of one destination');
  t.not(a.srcAddr, a.dstAddr, 'different addresses, different arrays');
  t.equal(a.dst4, (198 << 24) | (51 << 16) | (100 << 8) | 200, 'uint32 as int32 (a Smi) for an address from 128.0.0.0 up');
  t.ok(a.dst4 < 0, 'negative as int32');
  const bytes = addressBytesOf(4, a.dstAddr, a.dst4);
  t.same([...bytes], [198, 51, 100, 200], '4-byte form of the int32');
  t.equal(addressBytesOf(4, b.dstAddr, b.dst4), bytes, 'shared as well');
  const e = endpointsOf(4, pkt, 0, 4, 40000, 443);
  t.equal(e.remoteAddress, '192.0.2.1');
  t.equal(e.localAddress, '198.51.100.200');
  t.equal(endpointsOf(4, pkt, 0, 4, 1, 2).localAddress, e.localAddress, 'the text of an address is one string too');
});

t.test('IPv6: each flow gets arrays of its own, copies of the packet bytes', async (t) => {
  const pkt = new Uint8Array(32);
  pkt.set([0x20, 0x01, 0x0d, 0xb8], 0);
  pkt[15] = 1;
  pkt.set([0x20, 0x01, 0x0d, 0xb8], 16);
  pkt[31] = 2;
  const a = fields();
  const b = fields();
  setFlowAddresses(6, pkt, 0, 16, a);
  setFlowAddresses(6, pkt, 0, 16, b);
  t.same([...a.srcAddr], [...pkt.subarray(0, 16)]);
  t.same([...a.dstAddr], [...pkt.subarray(16, 32)]);
  t.not(a.srcAddr, b.srcAddr, 'not shared');
  pkt[15] = 9;
  t.equal(a.srcAddr[15], 1, 'a copy, not a view of the packet buffer');
  t.equal(a.src4, 0);
  t.equal(addressBytesOf(6, a.dstAddr, a.dst4), a.dstAddr, 'IPv6 bytes are the key itself');
});

t.test('hostPort: "ip:port" and "[v6]:port" for every port width, as a template literal would write them', async (t) => {
  for (const port of [0, 7, 80, 443, 8080, 40000, 65535]) {
    t.equal(hostPort('192.0.2.1', port), `192.0.2.1:${port}`);
    t.equal(hostPort('2001:db8::1', port), `[2001:db8::1]:${port}`);
  }
  const long = 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255';
  t.equal(hostPort(long, 65535), `[${long}]:65535`, 'the longest IPv6 text fits');
  t.equal(hostPort(`${long}%eth0`, 1), `[${long}%eth0]:1`, 'longer text (a zone) as it is');
  t.equal(hostPort('', 1), ':1', 'empty address (a socket that had none)');
  t.equal(hostPort('192.0.2.1', 70000), '192.0.2.1:70000', 'an out-of-range port as it is');
  t.equal(hostPort('é', 1), 'é:1', 'text that is no address, unchanged');
  const a = hostPort('192.0.2.1', 1);
  const b = hostPort('192.0.2.2', 2);
  t.equal(a, '192.0.2.1:1', 'a later call does not change an earlier result (no aliasing of the scratch buffer)');
  t.equal(b, '192.0.2.2:2');
});
