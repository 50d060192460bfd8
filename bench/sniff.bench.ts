/**
 * Sniffer micro-benchmark: ClientHello parses per second (one record, split
 * records, through FlowSniffer), HTTP heads, DNS queries and QUIC Initials.
 *   npm run build && node dist/bench/sniff.bench.js
 */
import { pathToFileURL } from 'node:url';
import { sniffTlsClientHello } from '../src/engine/sniff/tls-client-hello.js';
import { sniffHttpRequest } from '../src/engine/sniff/http-host.js';
import { sniffDnsUdp } from '../src/engine/sniff/dns-query.js';
import { sniffQuicInitial } from '../src/engine/sniff/quic-initial.js';
import { FlowSniffer } from '../src/engine/sniff/index.js';
import { ascii, clientHelloMessage, dnsQuery, extension, records } from '../test/sniff/fixtures.js';
import { RFC9001_CLIENT_INITIAL } from '../test/sniff/quic-builder.js';

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
}

function rate(iterations: number, fn: () => void): number {
  for (let i = 0; i < Math.min(iterations, 20_000); i++) fn(); // warm-up
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return iterations / seconds;
}

export function runSniffBench(): BenchRow[] {
  // A browser-sized ClientHello: GREASE, ~16 extensions, key shares, padding to ~1.8 KiB.
  const exts = [
    extension(0x0a0a, new Uint8Array(0)),
    extension(10, new Uint8Array(12)),
    extension(11, Uint8Array.of(1, 0)),
    extension(13, new Uint8Array(20)),
    extension(23, new Uint8Array(0)),
    extension(35, new Uint8Array(0)),
    extension(45, Uint8Array.of(1, 1)),
    extension(51, new Uint8Array(1263)),
    extension(27, new Uint8Array(3)),
    extension(17513, new Uint8Array(5)),
    extension(65037, new Uint8Array(250)),
  ];
  const msg = clientHelloMessage({ sni: 'www.example.com', alpn: ['h2', 'http/1.1'], before: exts.slice(0, 4), after: exts.slice(4), cipherSuites: 16 });
  const oneRecord = records(msg);
  const twoRecords = records(msg, [512]);
  const http = ascii('GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n\r\n');
  const dns = dnsQuery('www.example.com', { edns: true });
  let sink = 0;
  const rows: BenchRow[] = [];
  const n = 300_000;
  rows.push({
    name: `ClientHello parse, one record (${oneRecord.length} B)`,
    value: rate(n, () => {
      const r = sniffTlsClientHello(oneRecord);
      if (r.kind === 'found') sink += r.alpn.length;
    }),
    unit: 'parses/s',
  });
  rows.push({
    name: 'ClientHello parse, two records (gathered)',
    value: rate(n, () => {
      sink += sniffTlsClientHello(twoRecords).kind.length;
    }),
    unit: 'parses/s',
  });
  rows.push({
    name: 'ClientHello via FlowSniffer (new sniffer per flow)',
    value: rate(n, () => {
      sink += new FlowSniffer({ maxBytes: 8192 }).push(oneRecord).kind.length;
    }),
    unit: 'flows/s',
  });
  rows.push({
    name: 'ClientHello prefix -> need-more (first 600 B)',
    value: rate(n, () => {
      sink += sniffTlsClientHello(oneRecord.subarray(0, 600)).kind.length;
    }),
    unit: 'parses/s',
  });
  rows.push({ name: 'HTTP/1.1 request head', value: rate(n, () => void (sink += sniffHttpRequest(http).kind.length)), unit: 'parses/s' });
  rows.push({ name: 'DNS query (UDP)', value: rate(n, () => void (sink += sniffDnsUdp(dns).kind.length)), unit: 'parses/s' });
  rows.push({
    name: 'QUIC Initial (RFC 9001 A.2: derive keys, unprotect, open, parse)',
    value: rate(20_000, () => void (sink += sniffQuicInitial(RFC9001_CLIENT_INITIAL).kind.length)),
    unit: 'datagrams/s',
  });
  if (sink === 42) console.log('');
  return rows;
}

export function printSniffRows(rows: BenchRow[]): void {
  console.log(`\nflow sniffers (node ${process.version})`);
  for (const r of rows) console.log(`  ${r.name.padEnd(66)} ${Math.round(r.value).toLocaleString('en-US').padStart(12)} ${r.unit}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) printSniffRows(runSniffBench());
