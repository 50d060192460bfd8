import t from 'tap';
import { FlowTable, mapIpv4, type FlowKey } from '../../src/ip/flow-table.js';

interface Flow extends FlowKey {
  id: number;
}

function v4flow(id: number, src: number[], dst: number[], sport: number, dport: number, protocol = 6): Flow {
  const srcAddr = new Uint8Array(16);
  const dstAddr = new Uint8Array(16);
  mapIpv4(Uint8Array.from(src), 0, srcAddr);
  mapIpv4(Uint8Array.from(dst), 0, dstAddr);
  return { id, family: 4, protocol, srcAddr, dstAddr, srcPort: sport, dstPort: dport, nextInBucket: null, flowHash: 0 };
}

function v6flow(id: number, srcLast: number, dstLast: number, sport: number, dport: number): Flow {
  const srcAddr = new Uint8Array(16);
  const dstAddr = new Uint8Array(16);
  srcAddr.set([0x20, 0x01, 0x0d, 0xb8]);
  dstAddr.set([0x20, 0x01, 0x0d, 0xb8]);
  srcAddr[15] = srcLast;
  dstAddr[15] = dstLast;
  return { id, family: 6, protocol: 6, srcAddr, dstAddr, srcPort: sport, dstPort: dport, nextInBucket: null, flowHash: 0 };
}

t.test('IPv4 and IPv6 flows are found from packet bytes and only by their exact tuple', async (t) => {
  const table = new FlowTable<Flow>();
  const a = v4flow(1, [192, 0, 2, 1], [198, 51, 100, 7], 40000, 443);
  const b = v6flow(2, 1, 7, 40000, 443);
  table.insert(a);
  table.insert(b);
  // A fake IPv4 header: src at 12, dst at 16.
  const pkt = new Uint8Array(20);
  pkt.set([192, 0, 2, 1], 12);
  pkt.set([198, 51, 100, 7], 16);
  t.equal(table.lookup(4, 6, pkt, 12, 16, 40000, 443)?.id, 1);
  t.equal(table.lookup(4, 17, pkt, 12, 16, 40000, 443), null, 'protocol differs');
  t.equal(table.lookup(4, 6, pkt, 12, 16, 40001, 443), null, 'port differs');
  t.equal(table.lookup(4, 6, pkt, 16, 12, 443, 40000), null, 'reversed direction is another flow');
  const pkt6 = new Uint8Array(40);
  pkt6.set(b.srcAddr, 8);
  pkt6.set(b.dstAddr, 24);
  t.equal(table.lookup(6, 6, pkt6, 8, 24, 40000, 443)?.id, 2);
  pkt6[39] = 8;
  t.equal(table.lookup(6, 6, pkt6, 8, 24, 40000, 443), null, 'address differs');
});

t.test('thousands of flows: insert, find, remove', async (t) => {
  const table = new FlowTable<Flow>();
  const flows: Flow[] = [];
  for (let i = 0; i < 20000; i++) {
    const f = v4flow(i, [192, 0, 2, i & 0xff], [203, 0, 113, (i >> 8) & 0xff], 1024 + (i % 5000), 80);
    flows.push(f);
    table.insert(f);
  }
  t.equal(table.size, 20000);
  const pkt = new Uint8Array(20);
  let found = 0;
  for (const f of flows) {
    pkt.set(f.srcAddr.subarray(12), 12);
    pkt.set(f.dstAddr.subarray(12), 16);
    if (table.lookup(4, 6, pkt, 12, 16, f.srcPort, f.dstPort) === f) found++;
  }
  t.equal(found, 20000, 'every flow is found');
  let removed = 0;
  for (let i = 0; i < flows.length; i += 2) if (table.remove(flows[i]!)) removed++;
  t.equal(removed, 10000, 'every removal reports true');
  t.equal(table.size, 10000);
  t.notOk(table.remove(flows[0]!), 'removing twice reports false');
  let stillFound = 0;
  for (const f of flows) {
    pkt.set(f.srcAddr.subarray(12), 12);
    pkt.set(f.dstAddr.subarray(12), 16);
    if (table.lookup(4, 6, pkt, 12, 16, f.srcPort, f.dstPort) !== null) stillFound++;
  }
  t.equal(stillFound, 10000);
  t.equal([...table.values()].length, 10000, 'iteration sees every remaining flow');
});
