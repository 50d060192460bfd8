/**
 * 50,000 mutated or truncated copies of every TCP fixture into every TCP
 * parser (and the FlowSniffer with random chunking): nothing throws and every
 * verdict is well-formed.
 */
import t from 'tap';
import { sniffTlsClientHello } from '../../src/engine/sniff/tls-client-hello.js';
import { sniffHttpRequest } from '../../src/engine/sniff/http-host.js';
import { sniffDnsTcp, sniffDnsUdp } from '../../src/engine/sniff/dns-query.js';
import { FlowSniffer } from '../../src/engine/sniff/index.js';
import type { SniffResult } from '../../src/engine/sniff/result.js';
import { captureNodeClientHello } from './capture.js';
import { Rng, ascii, clientHelloMessage, dnsQuery, extension, records, splitRandom, tcpFramed } from './fixtures.js';
import { malformed, mutate } from './fuzz-helpers.js';

const N = 50_000;

t.test('TCP parsers survive mutated fixtures', async (t) => {
  const realHello = await captureNodeClientHello({ servername: 'www.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
  const fixtures: Array<[string, Uint8Array]> = [
    ['real node:tls ClientHello', realHello],
    ['large ClientHello', records(clientHelloMessage({ sni: 'big.example', alpn: ['h2'], padding: 3000, before: [extension(0x1a1a, new Uint8Array(40))] }))],
    ['ClientHello in two records', records(clientHelloMessage({ sni: 'two.example', alpn: ['h2', 'http/1.1'] }), [40])],
    ['HTTP origin-form', ascii('GET /index.html HTTP/1.1\r\nHost: www.example.com:8080\r\nAccept: */*\r\n\r\n')],
    ['HTTP absolute-form', ascii('GET http://user@abs.example:81/p?q HTTP/1.1\r\nHost: x\r\n\r\n')],
    ['HTTP IPv6 Host', ascii('POST /v6 HTTP/1.0\nHost: [2001:db8::1]:8080\nContent-Length: 0\n\n')],
    ['DNS over TCP', tcpFramed(dnsQuery('www.example.com', { edns: true }))],
  ];
  const parsers: Array<[string, (b: Uint8Array, rng: Rng) => SniffResult]> = [
    ['tls', (b) => sniffTlsClientHello(b)],
    ['tls small bound', (b) => sniffTlsClientHello(b, 64)],
    ['tls final', (b) => sniffTlsClientHello(b, 16384, true)],
    ['http', (b) => sniffHttpRequest(b)],
    ['http final', (b) => sniffHttpRequest(b, 200, true)],
    ['dns-tcp', (b) => sniffDnsTcp(b)],
    ['dns-udp', (b) => sniffDnsUdp(b)],
    [
      'FlowSniffer',
      (b, rng) => {
        const s = new FlowSniffer({ maxBytes: 4096 });
        let r: SniffResult = s.result;
        const parts = b.length > 3 ? splitRandom(b, 1 + rng.int(3), rng) : [b];
        for (const p of parts) {
          r = s.push(p);
          const bad = malformed(r);
          if (bad !== null) return r;
        }
        return rng.int(2) === 0 ? s.finish() : r;
      },
    ],
  ];
  const rng = new Rng(0xc0ffee);
  const counts: Record<string, number> = {};
  for (const [fname, fixture] of fixtures) {
    for (let i = 0; i < N; i++) {
      const other = fixtures[rng.int(fixtures.length)]![1];
      const input = mutate(fixture, other, rng);
      for (const [pname, parse] of parsers) {
        let r: SniffResult;
        try {
          r = parse(input, rng);
        } catch (e) {
          t.fail(`${pname} threw on mutated ${fname}: ${String(e)} input=${Buffer.from(input).toString('hex')}`);
          return;
        }
        const bad = malformed(r);
        if (bad !== null) {
          t.fail(`${pname} on mutated ${fname}: ${bad} input=${Buffer.from(input).toString('hex')}`);
          return;
        }
        const key = `${pname}:${r.kind}`;
        counts[key] = (counts[key] ?? 0) + 1;
      }
    }
    t.pass(`${N} mutations of ${fname}`);
  }
  // The mutations reached every outcome, so the checks above were not vacuous.
  for (const p of ['tls', 'http', 'dns-tcp']) {
    for (const k of ['found', 'need-more', 'not-this']) t.ok((counts[`${p}:${k}`] ?? 0) > 0, `${p} reached ${k}: ${counts[`${p}:${k}`]}`);
  }
});

t.test('random bytes', async (t) => {
  const rng = new Rng(12345);
  for (let i = 0; i < 20_000; i++) {
    const b = new Uint8Array(rng.int(300));
    for (let j = 0; j < b.length; j++) b[j] = rng.int(256);
    if (i % 4 === 0 && b.length > 0) b[0] = 0x16;
    for (const r of [sniffTlsClientHello(b), sniffHttpRequest(b), sniffDnsTcp(b), sniffDnsUdp(b)]) {
      const bad = malformed(r);
      if (bad !== null) {
        t.fail(`${bad} on ${Buffer.from(b).toString('hex')}`);
        return;
      }
    }
  }
  t.pass('20,000 random buffers');
});
