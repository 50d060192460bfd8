/**
 * Codec micro-benchmark: parse/emit rates and checksum/GSO throughput.
 *   npm run build && node dist/bench/wire.bench.js
 */
import { pathToFileURL } from 'node:url';
import { internetChecksum } from '../src/wire/checksum.js';
import { emitIpv4, newIpv4EmitRepr, newIpv4Repr, parseIpv4 } from '../src/wire/ipv4.js';
import { TCP_ACK, emitTcp, newTcpRepr, parseTcp } from '../src/wire/tcp.js';
import { GSO_TCPV4, VNET_F_NEEDS_CSUM, newVnetRepr } from '../src/wire/vnet.js';
import { gsoSplit } from '../src/wire/gso.js';
import { tcpPacket } from '../test/wire/fixtures.js';

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
}

function timeIt(iterations: number, fn: () => void): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export function runWireBench(): BenchRow[] {
  const rows: BenchRow[] = [];
  const pkt = tcpPacket(4, 1, TCP_ACK, 1448, '0101 080a 0000 0001 0000 0002');
  const ip = newIpv4Repr();
  const tcp = newTcpRepr();
  let sink = 0;
  const parse = (): void => {
    parseIpv4(pkt, 0, pkt.length, ip, false);
    parseTcp(pkt, ip.payloadOffset, ip.payloadLength, tcp);
    sink += tcp.seq;
  };
  timeIt(200_000, parse);
  const n = 3_000_000;
  rows.push({ name: 'parse IPv4+TCP header (timestamps)', value: n / timeIt(n, parse) / 1e6, unit: 'Mpps' });
  const parseVerify = (): void => {
    parseIpv4(pkt, 0, pkt.length, ip, true);
    sink += ip.ttl;
  };
  rows.push({ name: 'parse IPv4 with header checksum', value: n / timeIt(n, parseVerify) / 1e6, unit: 'Mpps' });

  const e4 = newIpv4EmitRepr();
  e4.protocol = 6;
  e4.payloadLength = 32;
  const out = new Uint8Array(128);
  const emit = (): void => {
    emitIpv4(e4, out, 0);
    emitTcp(tcp, out, 20);
  };
  timeIt(200_000, emit);
  rows.push({ name: 'emit IPv4+TCP header', value: n / timeIt(n, emit) / 1e6, unit: 'Mpps' });

  const mtuBuf = pkt;
  const c1500 = (): void => {
    sink += internetChecksum(mtuBuf, 0, 1500);
  };
  const k = 400_000;
  rows.push({ name: 'checksum 1500 B', value: (k * 1500 * 8) / timeIt(k, c1500) / 1e9, unit: 'Gbit/s' });
  const big = new Uint8Array(65536).fill(0x5a);
  const c64 = (): void => {
    sink += internetChecksum(big, 0, big.length);
  };
  rows.push({ name: 'checksum 64 KiB', value: (10_000 * 65536 * 8) / timeIt(10_000, c64) / 1e9, unit: 'Gbit/s' });

  const superPkt = tcpPacket(4, 1, TCP_ACK, 65535 - 52, '0101 080a 0000 0001 0000 0002');
  const v = newVnetRepr();
  v.flags = VNET_F_NEEDS_CSUM;
  v.gsoType = GSO_TCPV4;
  v.gsoSize = 1448;
  v.csumStart = 20;
  v.csumOffset = 16;
  const dst = new Uint8Array(80_000);
  const lens = new Uint32Array(64);
  const split = (): void => {
    sink += gsoSplit(v, superPkt, 0, superPkt.length, dst, 0, lens);
  };
  timeIt(500, split);
  rows.push({ name: 'gsoSplit 64 KB TCP super-packet', value: (5000 * superPkt.length * 8) / timeIt(5000, split) / 1e9, unit: 'Gbit/s' });
  if (sink === 0.5) console.log(sink); // keep the work observable
  return rows;
}

export function printRows(title: string, rows: BenchRow[]): void {
  console.log(`\n${title}`);
  for (const r of rows) console.log(`  ${r.name.padEnd(44)} ${r.value.toFixed(2).padStart(9)} ${r.unit}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  printRows(`wire codecs (node ${process.version})`, runWireBench());
}
