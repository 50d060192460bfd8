/**
 * With IFF_VNET_HDR and TUNSETOFFLOAD, a bulk TCP transfer from the kernel
 * into the TUN arrives as GSO super-packets; splitting them yields valid,
 * MTU-sized segments (checksums verified by the fixture).
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, requireRoot, waitForJsonLine } from '../harness/netns.js';

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/tun-responder.js');
const BYTES = 32 * 1024 * 1024;

interface Summary {
  event: string;
  superPackets: number;
  maxSuperPacket: number;
  segments: number;
  badSegments: number;
  bytes: number;
  outOfOrder: number;
  rxBatches: number;
  rxPackets: number;
}

for (const family of [4, 6] as const) {
  t.test(`GSO super-packets from a kernel TCP sender split into valid segments (IPv${family})`, async (t) => {
    if (!requireRoot(t)) return;
    const lab = await Lab.create(t, `gso${family}`);
    const ns = await lab.netns('host');
    const child = ns.spawn([process.execPath, fixture, '--name', 'sl0', '--offload']);
    const ready = await waitForJsonLine<{ event: string; offloads: number; vnetHdr: boolean }>(child, (m) => m.event === 'ready');
    t.ok(ready.vnetHdr, 'virtio_net_hdr on');
    t.ok((ready.offloads & 0x07) === 0x07, `kernel accepted CSUM|TSO4|TSO6 (0x${ready.offloads.toString(16)})`);
    await ns.ipBatch([
      'addr add 198.51.100.1/24 dev sl0',
      'route add 203.0.113.0/24 dev sl0',
      'addr add 2001:db8:1::1/64 dev sl0 nodad',
      'route add 2001:db8:2::/64 dev sl0',
    ]);
    const summary = waitForJsonLine<Summary>(child, (m) => m.event === 'tcp-summary', 60_000);
    const dst = family === 4 ? '203.0.113.7' : '2001:db8:2::7';
    await ns.exec(['bash', '-c', `head -c ${BYTES} /dev/zero > /dev/tcp/${dst}/9000`], { timeoutMs: 60_000 });
    const s = await summary;
    t.equal(s.bytes, BYTES, 'every byte received in order');
    t.ok(s.superPackets > 0, `${s.superPackets} GSO super-packets arrived`);
    t.ok(s.maxSuperPacket > 1500, `largest read was ${s.maxSuperPacket} bytes (more than one MTU)`);
    t.equal(s.badSegments, 0, 'every split segment is at most the MTU and its checksum verifies');
    t.ok(s.segments >= s.superPackets * 2, `${s.segments} segments from ${s.superPackets} super-packets`);
    t.ok(s.rxPackets > s.rxBatches, `batched reads: ${s.rxPackets} packets in ${s.rxBatches} batches`);
  });
}
