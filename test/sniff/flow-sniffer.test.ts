import t from 'tap';
import { DatagramSniffer, FlowSniffer, sniffDatagram } from '../../src/engine/sniff/index.js';
import { captureNodeClientHello } from './capture.js';
import { Rng, ascii, clientHelloMessage, dnsQuery, hex, records, splitRandom, tcpFramed } from './fixtures.js';
import { RFC9001_CLIENT_INITIAL, cryptoFrame, sealInitial } from './quic-builder.js';

t.test('TCP flow: a real ClientHello pushed in random chunks', async (t) => {
  const hello = await captureNodeClientHello({ servername: 'flow.example.com', ALPNProtocols: ['h2'] });
  const rng = new Rng(99);
  for (let trial = 0; trial < 50; trial++) {
    const s = new FlowSniffer({ dstPort: 443 });
    const parts = splitRandom(hello, 1 + rng.int(6), rng);
    const kinds = parts.map((p) => s.push(p).kind);
    if (kinds.slice(0, -1).some((k) => k !== 'need-more') || kinds[kinds.length - 1] !== 'found') {
      t.fail(`trial ${trial}: ${kinds.join()}`);
      return;
    }
    const r = s.result;
    if (r.kind !== 'found' || r.protocol !== 'tls' || r.serverName !== 'flow.example.com') t.fail(JSON.stringify(r));
  }
  t.pass('50 random chunkings');
  const s = new FlowSniffer();
  s.push(hello);
  t.equal(s.push(hex('17 0303 0010')).kind, 'found', 'verdict sticky after found');
  t.equal(s.bytesSeen, hello.length, 'bytes counted until the verdict');
});

t.test('TCP flow: HTTP head split mid-header, DNS over TCP, and not-this', async (t) => {
  const http = new FlowSniffer({ dstPort: 80 });
  t.equal(http.push(ascii('GET /a HTTP/1.1\r\nHo')).kind, 'need-more');
  const r = http.push(ascii('st: Split.Example:8080\r\n\r\n'));
  t.match(r, { kind: 'found', protocol: 'http', serverName: 'split.example', method: 'GET', path: '/a' });

  const dns = new FlowSniffer({ dstPort: 53 });
  const q = tcpFramed(dnsQuery('tcp.example', { edns: true }));
  t.equal(dns.push(q.subarray(0, 1)).kind, 'need-more');
  t.match(dns.push(q.subarray(1)), { kind: 'found', protocol: 'dns', serverName: 'tcp.example', transport: 'tcp' });
  const noHint = new FlowSniffer();
  t.match(noHint.push(q), { protocol: 'dns' }, 'no port hint: DNS tried everywhere');
  const wrongPort = new FlowSniffer({ dstPort: 8443 });
  t.equal(wrongPort.push(q).kind, 'not-this', 'port hint 8443: DNS not tried');
  const custom = new FlowSniffer({ dstPort: 5353, dnsPorts: [5353] });
  t.match(custom.push(q), { protocol: 'dns' });

  const ssh = new FlowSniffer({ dstPort: 22 });
  t.equal(ssh.push(ascii('SSH-2.0-OpenSSH_9.6\r\n')).kind, 'not-this');
  t.equal(new FlowSniffer().push(hex('00')).kind, 'need-more', 'one zero byte could still be DNS length');
  t.equal(new FlowSniffer({ dstPort: 443 }).push(hex('00')).kind, 'not-this', 'but not on 443');
  t.equal(new FlowSniffer().push(new Uint8Array(0)).kind, 'need-more', 'empty chunk');
});

t.test('TCP flow: finish() and the byte bound', async (t) => {
  const hello = records(clientHelloMessage({ sni: 'slow.example', alpn: ['h2'] }));
  const s = new FlowSniffer({ maxBytes: 8192 });
  t.equal(s.push(hello.subarray(0, 20)).kind, 'need-more');
  t.match(s.finish(), { kind: 'found', protocol: 'tls', serverName: null, complete: false });
  t.equal(new FlowSniffer().finish().kind, 'not-this', 'nothing sent (server-first protocol)');
  const h = new FlowSniffer();
  h.push(ascii('GET / HTTP/1.1\r\nHost: t.example\r\n'));
  t.match(h.finish(), { protocol: 'http', serverName: 't.example', complete: false });
  // a ClientHello larger than maxBytes is judged from the bounded prefix
  const big = records(clientHelloMessage({ sni: 'big.example', padding: 12000 }));
  const b = new FlowSniffer({ maxBytes: 8192 });
  const parts = splitRandom(big, 4, new Rng(3));
  let last = b.push(parts[0]!);
  for (let i = 1; i < parts.length && last.kind === 'need-more'; i++) last = b.push(parts[i]!);
  t.match(last, { kind: 'found', protocol: 'tls', serverName: 'big.example', complete: false });
  t.throws(() => new FlowSniffer({ maxBytes: -1 }), { code: 'SNIFF_ERR_BAD_LIMIT' });
});

t.test('UDP: sniffDatagram and DatagramSniffer', async (t) => {
  t.match(sniffDatagram(RFC9001_CLIENT_INITIAL, 443), { kind: 'found', protocol: 'quic', serverName: 'example.com' });
  t.match(sniffDatagram(dnsQuery('u.example'), 53), { kind: 'found', protocol: 'dns', serverName: 'u.example', transport: 'udp' });
  t.equal(sniffDatagram(dnsQuery('u.example'), 5000).kind, 'not-this', 'DNS only on DNS ports');
  t.equal(sniffDatagram(hex('deadbeef'), 443).kind, 'not-this');
  t.match(sniffDatagram(RFC9001_CLIENT_INITIAL, 53), { protocol: 'quic' }, 'QUIC still recognised on port 53');

  const hello = clientHelloMessage({ sni: 'two.example', alpn: ['h3'], padding: 1500 });
  const dcid = hex('0807060504030201');
  const d1 = sealInitial({ dcid, pn: 0, frames: cryptoFrame(0, hello.subarray(0, 1000)) });
  const d2 = sealInitial({ dcid, pn: 1, frames: cryptoFrame(1000, hello.subarray(1000)) });
  t.equal(sniffDatagram(d1, 443).kind, 'need-more', 'one-shot says the hello continues');
  const s = new DatagramSniffer(443);
  t.equal(s.push(d1).kind, 'need-more');
  t.match(s.push(d2), { kind: 'found', protocol: 'quic', serverName: 'two.example', alpn: ['h3'] });
  const p = new DatagramSniffer(443);
  p.push(d1);
  t.match(p.finish(), { protocol: 'quic', complete: false });
  t.equal(new DatagramSniffer(443).finish().kind, 'not-this');
});
