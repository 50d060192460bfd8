import t from 'tap';
import type { Test } from 'tap';
import { sniffHttpRequest } from '../../src/engine/sniff/http-host.js';
import type { SniffResult } from '../../src/engine/sniff/result.js';
import { captureCurlHttp, captureNodeHttp } from './capture.js';
import { ascii, concat, hex } from './fixtures.js';

function expectHttp(t: Test, r: SniffResult, host: string | null, method: string, path: string, complete = true): void {
  t.equal(r.kind, 'found', 'found');
  if (r.kind !== 'found' || r.protocol !== 'http') {
    t.fail(`got ${JSON.stringify(r)}`);
    return;
  }
  t.equal(r.serverName, host, `host ${String(host)}`);
  t.equal(r.method, method, 'method');
  t.equal(r.path, path, 'path');
  t.equal(r.complete, complete, 'complete');
}

const req = (s: string): Uint8Array => ascii(s);

t.test('real request from node:http (origin-form, Host with port)', async (t) => {
  const head = await captureNodeHttp({ path: '/index.html?q=1', headers: { Host: 'WWW.Example.com:8080', 'User-Agent': 'sniff-test' } });
  t.match(Buffer.from(head).toString('latin1'), /^GET \/index\.html\?q=1 HTTP\/1\.1\r\n/);
  expectHttp(t, sniffHttpRequest(head), 'www.example.com', 'GET', '/index.html?q=1');
  let bad = 0;
  for (let n = 1; n < head.length; n++) if (sniffHttpRequest(head.subarray(0, n)).kind !== 'need-more') bad++;
  t.equal(bad, 0, 'every prefix needs more');
});

t.test('real request from curl through a proxy (absolute-form)', async (t) => {
  const head = await captureCurlHttp((port) => ['-x', `http://127.0.0.1:${port}`, 'http://Proxy.Example.net:8081/a/b?c=d']);
  t.match(Buffer.from(head).toString('latin1'), /^GET http:\/\/[Pp]roxy\.[Ee]xample\.net:8081\/a\/b\?c=d HTTP\/1\.1\r\n/);
  expectHttp(t, sniffHttpRequest(head), 'proxy.example.net', 'GET', '/a/b?c=d');
});

t.test('real request from curl to an IPv6 literal on ::1', async (t) => {
  const head = await captureCurlHttp((port) => ['-g', `http://[::1]:${port}/v6`], '::1');
  t.match(Buffer.from(head).toString('latin1'), /\r\nHost: \[::1\]:\d+\r\n/);
  expectHttp(t, sniffHttpRequest(head), '::1', 'GET', '/v6');
});

t.test('request-target forms (RFC 9112 §3.2)', async (t) => {
  expectHttp(t, sniffHttpRequest(req('GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n')), 'example.com', 'GET', '/x');
  expectHttp(t, sniffHttpRequest(req('GET http://abs.example/ HTTP/1.1\r\nHost: other.example\r\n\r\n')), 'abs.example', 'GET', '/');
  expectHttp(t, sniffHttpRequest(req('GET http://abs.example HTTP/1.1\r\n\r\n')), 'abs.example', 'GET', '/');
  expectHttp(t, sniffHttpRequest(req('GET http://abs.example?x=1 HTTP/1.1\r\n\r\n')), 'abs.example', 'GET', '/?x=1');
  expectHttp(t, sniffHttpRequest(req('GET https://u:p@Sec.Example:443/p HTTP/1.1\r\n\r\n')), 'sec.example', 'GET', '/p');
  expectHttp(t, sniffHttpRequest(req('GET http://[2001:DB8::1]:80/p HTTP/1.1\r\n\r\n')), '2001:db8::1', 'GET', '/p');
  expectHttp(t, sniffHttpRequest(req('CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunnel.example:443\r\n\r\n')), 'tunnel.example', 'CONNECT', '');
  expectHttp(t, sniffHttpRequest(req('CONNECT [::1]:443 HTTP/1.1\r\n\r\n')), '::1', 'CONNECT', '');
  expectHttp(t, sniffHttpRequest(req('OPTIONS * HTTP/1.1\r\nHost: star.example\r\n\r\n')), 'star.example', 'OPTIONS', '*');
  expectHttp(t, sniffHttpRequest(req('GET / HTTP/1.0\r\n\r\n')), null, 'GET', '/');
});

t.test('Host field variants', async (t) => {
  const h = (line: string) => sniffHttpRequest(req(`GET / HTTP/1.1\r\n${line}\r\nAccept: */*\r\n\r\n`));
  expectHttp(t, h('hOsT:   spaced.example  '), 'spaced.example', 'GET', '/');
  expectHttp(t, h('Host:\tTab.Example\t'), 'tab.example', 'GET', '/');
  expectHttp(t, h('Host: port.example:8080'), 'port.example', 'GET', '/');
  expectHttp(t, h('Host: port.example:'), 'port.example', 'GET', '/');
  expectHttp(t, h('Host: 192.0.2.7:80'), '192.0.2.7', 'GET', '/');
  expectHttp(t, h('Host: [fe80::1]:8443'), 'fe80::1', 'GET', '/');
  expectHttp(t, h('Host: [fe80::1]'), 'fe80::1', 'GET', '/');
  expectHttp(t, h('Host: trailing.dot.example.'), 'trailing.dot.example', 'GET', '/');
  // refused
  expectHttp(t, h('Host: '), null, 'GET', '/');
  expectHttp(t, h('Host: bad host'), null, 'GET', '/');
  expectHttp(t, h('Host: a:b:c'), null, 'GET', '/');
  expectHttp(t, h('Host: [not-v6]:80'), null, 'GET', '/');
  expectHttp(t, h('Host: [::1'), null, 'GET', '/');
  expectHttp(t, h('Host: x.example:99999x'), null, 'GET', '/');
  expectHttp(t, h('Host: 999.1.1.1'), null, 'GET', '/');
  expectHttp(t, h('Host: a.example\r\nHost: b.example'), null, 'GET', '/');
  expectHttp(t, h('Host: a.example\r\n  folded.example'), null, 'GET', '/');
  expectHttp(t, h('Host : space-before-colon.example'), null, 'GET', '/');
  expectHttp(t, h('X-Host: not-host.example'), null, 'GET', '/');
});

t.test('line endings: bare LF, leading empty lines', async (t) => {
  expectHttp(t, sniffHttpRequest(req('POST /p HTTP/1.1\nHost: lf.example\n\n')), 'lf.example', 'POST', '/p');
  expectHttp(t, sniffHttpRequest(req('\r\n\r\nGET / HTTP/1.1\r\nHost: lead.example\r\n\r\n')), 'lead.example', 'GET', '/');
  t.equal(sniffHttpRequest(req('\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n')).kind, 'not-this', 'three empty lines first');
});

t.test('a head split across chunks stays need-more until the empty line', async (t) => {
  const full = req('PUT /upload HTTP/1.1\r\nUser-Agent: x\r\nHost: split.example:81\r\nContent-Length: 0\r\n\r\n');
  const cuts = [3, 4, 5, 20, 30, 40, full.length - 2, full.length - 1];
  for (const c of cuts) t.equal(sniffHttpRequest(full.subarray(0, c)).kind, 'need-more', `cut at ${c}`);
  expectHttp(t, sniffHttpRequest(full), 'split.example', 'PUT', '/upload');
  // a body after the head is ignored
  expectHttp(t, sniffHttpRequest(concat(full, hex('00ff00ff'))), 'split.example', 'PUT', '/upload');
});

t.test('bounds: maxBytes and final', async (t) => {
  const long = req('GET /long HTTP/1.1\r\nHost: bound.example\r\nX-Pad: ' + 'a'.repeat(20000) + '\r\n\r\n');
  expectHttp(t, sniffHttpRequest(long, 16384), 'bound.example', 'GET', '/long', false);
  const hostLate = req('GET /late HTTP/1.1\r\nX-Pad: ' + 'a'.repeat(20000) + '\r\nHost: late.example\r\n\r\n');
  expectHttp(t, sniffHttpRequest(hostLate, 16384), null, 'GET', '/late', false);
  expectHttp(t, sniffHttpRequest(hostLate, 32768), 'late.example', 'GET', '/late', true);
  t.equal(sniffHttpRequest(req('GET /x HTTP/1.1\r\nHost: f.example\r\n'), 16384, false).kind, 'need-more');
  expectHttp(t, sniffHttpRequest(req('GET /x HTTP/1.1\r\nHost: f.example\r\n'), 16384, true), 'f.example', 'GET', '/x', false);
  t.equal(sniffHttpRequest(req('GET /x HTT'), 16384, true).kind, 'not-this', 'request line incomplete at the end');
  t.equal(sniffHttpRequest(req('GET /' + 'x'.repeat(100)), 50).kind, 'not-this', 'request line longer than the bound');
});

t.test('not HTTP/1.x', async (t) => {
  const cases: Array<[string, Uint8Array]> = [
    ['TLS', hex('16 0301 0200 01')],
    ['DNS over TCP', hex('001d 1234 0100 0001')],
    ['SSH banner', req('SSH-2.0-OpenSSH_9.6\r\n')],
    ['HTTP/2 preface', req('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')],
    ['HTTP/0.9', req('GET /\r\n')],
    ['lowercase version', req('GET / http/1.1\r\n')],
    ['two spaces', req('GET  / HTTP/1.1\r\n')],
    ['CTL in target', req('GET /\x01 HTTP/1.1\r\n')],
    ['method too long', req('A'.repeat(40) + ' / HTTP/1.1\r\n')],
    ['SMTP command', req('EHLO mail.example\r\n')],
    ['binary', hex('00 00 00 00 ff ff')],
    ['CR not followed by LF', req('\rGET')],
    ['version with letters', req('GET / HTTP/1.x\r\n')],
  ];
  for (const [what, bytes] of cases) t.equal(sniffHttpRequest(bytes).kind, 'not-this', what);
  t.equal(sniffHttpRequest(new Uint8Array(0)).kind, 'need-more');
  t.equal(sniffHttpRequest(req('GE')).kind, 'need-more');
  t.equal(sniffHttpRequest(req('GET / HTTP/1.1\r')).kind, 'need-more');
});
