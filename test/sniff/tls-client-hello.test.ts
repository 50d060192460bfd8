import t from 'tap';
import type { Test } from 'tap';
import { sniffTlsClientHello } from '../../src/engine/sniff/tls-client-hello.js';
import { SniffError, type SniffResult } from '../../src/engine/sniff/result.js';
import { captureCurlClientHello, captureNodeClientHello } from './capture.js';
import { Rng, ascii, clientHelloMessage, concat, extension, hex, records, sniExtension, splitRandom } from './fixtures.js';

function expectFound(t: Test, r: SniffResult, name: string | null, alpn: string[] | null, complete = true): void {
  t.equal(r.kind, 'found', 'found');
  if (r.kind !== 'found') return;
  t.equal(r.protocol, 'tls');
  t.equal(r.serverName, name, `serverName ${String(name)}`);
  if (alpn !== null) t.same(r.alpn, alpn, 'alpn');
  if (r.protocol === 'tls') t.equal(r.complete, complete, 'complete');
}

t.test('real ClientHello from node:tls (servername www.example.com, ALPN h2,http/1.1)', async (t) => {
  const hello = await captureNodeClientHello({ servername: 'www.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
  t.equal(hello[0], 22, 'starts with a handshake record');
  expectFound(t, sniffTlsClientHello(hello), 'www.example.com', ['h2', 'http/1.1']);
  // Every strict prefix is a consistent beginning: need-more, never not-this.
  let bad = 0;
  for (let n = 1; n < hello.length; n++) if (sniffTlsClientHello(hello.subarray(0, n)).kind !== 'need-more') bad++;
  t.equal(bad, 0, 'all prefixes say need-more');
  // Trailing bytes after the hello (e.g. early data records) do not matter.
  expectFound(t, sniffTlsClientHello(concat(hello, hex('14 0303 0001 01'))), 'www.example.com', ['h2', 'http/1.1']);
});

t.test('real ClientHello from node:tls with a mixed-case name is lowercased', async (t) => {
  const hello = await captureNodeClientHello({ servername: 'Api7.Example.ORG', ALPNProtocols: ['http/1.1'] });
  expectFound(t, sniffTlsClientHello(hello), 'api7.example.org', ['http/1.1']);
});

t.test('real ClientHello from curl (OpenSSL)', async (t) => {
  const hello = await captureCurlClientHello('www.example.com');
  const r = sniffTlsClientHello(hello);
  expectFound(t, r, 'www.example.com', null);
  if (r.kind === 'found') t.ok(r.alpn.includes('http/1.1'), `alpn ${r.alpn.join(',')}`);
});

t.test('large ClientHello (padding, 60 extensions) split into 3 TCP segments of random sizes', async (t) => {
  const many = Array.from({ length: 60 }, (_, i) => extension(0x0a0a + i * 0x1000 + 0x100, new Uint8Array(i * 3)));
  const msg = clientHelloMessage({ sni: 'big.example.net', alpn: ['h2', 'http/1.1'], before: many.slice(0, 30), after: many.slice(30), padding: 4000, cipherSuites: 80 });
  const stream = records(msg);
  t.ok(stream.length > 9000, `size ${stream.length}`);
  const rng = new Rng(0x51f7);
  for (let trial = 0; trial < 200; trial++) {
    const segs = splitRandom(stream, 3, rng);
    let acc: Uint8Array = new Uint8Array(0);
    const kinds: string[] = [];
    let last: SniffResult | null = null;
    for (const s of segs) {
      acc = concat(acc, s);
      last = sniffTlsClientHello(acc);
      kinds.push(last.kind);
    }
    if (kinds.join() !== 'need-more,need-more,found') {
      t.fail(`trial ${trial}: ${kinds.join()}`);
      return;
    }
    if (trial === 0) expectFound(t, last!, 'big.example.net', ['h2', 'http/1.1']);
  }
  t.pass('200 random 3-way splits: need-more, need-more, found');
});

t.test('a ClientHello spanning two TLS records (RFC 8446 §5.1 fragmentation)', async (t) => {
  const msg = clientHelloMessage({ sni: 'two.records.example', alpn: ['h2'] });
  const two = records(msg, [60]);
  t.equal(two[0], 22);
  t.equal(two[5 + 60], 22, 'second record header follows the first fragment');
  expectFound(t, sniffTlsClientHello(two), 'two.records.example', ['h2']);
  for (let n = 1; n < two.length; n++) {
    const k = sniffTlsClientHello(two.subarray(0, n)).kind;
    if (k !== 'need-more') t.fail(`prefix ${n}: ${k}`);
  }
  // The cut inside the handshake header itself, and many tiny records.
  expectFound(t, sniffTlsClientHello(records(msg, [2])), 'two.records.example', ['h2']);
  expectFound(t, sniffTlsClientHello(records(msg, Array(200).fill(7))), 'two.records.example', ['h2']);
  // TLS 1.0 record version (0x0301) and TLS 1.2 (0x0303) both accepted.
  expectFound(t, sniffTlsClientHello(records(msg, [], 0x0303)), 'two.records.example', ['h2']);
});

t.test('beyond maxBytes: the prefix decides, complete=false', async (t) => {
  const early = records(clientHelloMessage({ sni: 'early.example', padding: 20000 }));
  t.ok(early.length > 16384);
  expectFound(t, sniffTlsClientHello(early, 16384), 'early.example', [], false);
  expectFound(t, sniffTlsClientHello(early.subarray(0, 16384), 16384), 'early.example', [], false);
  t.equal(sniffTlsClientHello(early.subarray(0, 16383), 16384).kind, 'need-more');
  const late = records(clientHelloMessage({ before: [extension(21, new Uint8Array(17000))], sni: 'late.example' }));
  expectFound(t, sniffTlsClientHello(late, 16384), null, [], false);
  expectFound(t, sniffTlsClientHello(late, 65536), 'late.example', [], true);
  // maxBytes small: gives up on the prefix it has
  const small = records(clientHelloMessage({ sni: 'a.example' }));
  expectFound(t, sniffTlsClientHello(small, 20), null, [], false);
  t.equal(sniffTlsClientHello(small, 8).kind, 'not-this', 'no handshake header within the bound');
});

t.test('final=true turns a consistent prefix into a partial verdict', async (t) => {
  const stream = records(clientHelloMessage({ sni: 'f.example', alpn: ['h2'] }));
  t.equal(sniffTlsClientHello(stream.subarray(0, 3), 16384, true).kind, 'not-this');
  expectFound(t, sniffTlsClientHello(stream.subarray(0, 60), 16384, true), null, [], false);
  expectFound(t, sniffTlsClientHello(stream, 16384, true), 'f.example', ['h2'], true);
});

t.test('server names refused: garbage, IP literals, duplicates, absent', async (t) => {
  const cases: Array<[string, Uint8Array]> = [
    ['space', ascii('bad name.example')],
    ['non-ASCII', hex('6578 c3a9 2e63 6f6d')],
    ['NUL', hex('61 00 62')],
    ['IPv4 literal (RFC 6066 §3)', ascii('192.0.2.1')],
    ['empty label', ascii('a..example')],
    ['64-byte label', ascii('a'.repeat(64) + '.example')],
    ['254 bytes', ascii(('a'.repeat(62) + '.').repeat(4) + 'ab')],
    ['numeric TLD', ascii('host.123')],
    ['empty', new Uint8Array(0)],
  ];
  for (const [what, name] of cases) {
    expectFound(t, sniffTlsClientHello(records(clientHelloMessage({ sni: name, alpn: ['h2'] }))), null, ['h2']);
    t.comment(what);
  }
  expectFound(t, sniffTlsClientHello(records(clientHelloMessage({ sni: 'trailing.dot.example.' }))), 'trailing.dot.example', []);
  expectFound(t, sniffTlsClientHello(records(clientHelloMessage({ sni: '_svc.x-y.example' }))), '_svc.x-y.example', []);
  expectFound(t, sniffTlsClientHello(records(clientHelloMessage({ sni: 'a.example', after: [sniExtension('b.example')] }))), null, []);
  expectFound(t, sniffTlsClientHello(records(clientHelloMessage({ alpn: ['h2', 'http/1.1'] }))), null, ['h2', 'http/1.1']);
  // server_name with only a non-host_name entry
  const odd = extension(0, hex('0006 01 0003 616263'));
  expectFound(t, sniffTlsClientHello(records(clientHelloMessage({ before: [odd] }))), null, []);
  // ALPN: non-printable names dropped, an empty name ends the list
  const alpn = extension(16, hex('000b 02 6832 03 00ff01 00 02 6833'));
  expectFound(t, sniffTlsClientHello(records(clientHelloMessage({ sni: 'x.example', after: [alpn] }))), 'x.example', ['h2']);
});

t.test('a ClientHello without extensions (pre-TLS 1.3) is still TLS', async (t) => {
  const body = concat(hex('0301'), new Uint8Array(32), hex('00'), hex('0002 002f'), hex('01 00'));
  const msg = concat(hex('01 00 00'), Uint8Array.of(body.length), body);
  expectFound(t, sniffTlsClientHello(records(msg)), null, []);
});

t.test('not TLS', async (t) => {
  const msg = clientHelloMessage({ sni: 'x.example' });
  const good = records(msg);
  const cases: Array<[string, Uint8Array]> = [
    ['HTTP', ascii('GET / HTTP/1.1\r\n')],
    ['SSH', ascii('SSH-2.0-OpenSSH_9.6\r\n')],
    ['alert record', hex('15 0303 0002 0228')],
    ['SSLv2-style first byte', hex('80 2e 01 0002')],
    ['record major version 2', hex('16 0203 0010')],
    ['record minor version 9', hex('16 0309 0010')],
    ['zero-length record', hex('16 0301 0000')],
    ['record over 2^14', hex('16 0301 4001')],
    ['ServerHello', records(concat(hex('02'), msg.subarray(1)))],
    ['legacy_version 0x0200', (() => { const b = good.slice(); b[9] = 2; return b; })()],
    ['session id 33', (() => { const b = good.slice(); b[43] = 33; return b; })()],
    ['handshake length too small', hex('16 0301 0008 01 000004 03030000')],
    ['interleaved alert between fragments', concat(records(msg, [50]).subarray(0, 55), hex('15 0303 0002 0228'))],
    ['extensions length != rest', (() => { const b = good.slice(); b[5 + 81 + 1]!++; return b; })()],
  ];
  for (const [what, bytes] of cases) t.equal(sniffTlsClientHello(bytes).kind, 'not-this', what);
  t.equal(sniffTlsClientHello(new Uint8Array(0)).kind, 'need-more', 'nothing yet');
  t.equal(sniffTlsClientHello(hex('16')).kind, 'need-more');
});

t.test('misuse: maxBytes must be a positive integer', async (t) => {
  t.throws(() => sniffTlsClientHello(hex('16'), 0), { code: 'SNIFF_ERR_BAD_LIMIT' });
  t.throws(() => sniffTlsClientHello(hex('16'), 1.5), SniffError);
});
