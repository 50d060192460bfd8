import t from 'tap';
import {
  adaptResponse,
  buildAddressResponse,
  buildEmptyNoError,
  buildHeaderOnlyResponse,
  buildNxDomain,
  buildQuery,
  buildRefused,
  buildResponse,
  buildServFail,
  canonicalName,
  decodeMessage,
  DnsParseError,
  DnsRcode,
  DnsType,
  dnsParseErrorName,
  encodeMessage,
  frameTcp,
  nameToLabels,
  parseMessage,
  TcpFrameReader,
} from '../../src/dns/message.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// Captured on loopback: `dig +noedns alias.example.test A` against dnsmasq 2.90
// (--cname=alias.example.test,target.example.test --local-ttl=300).
const DIG_QUERY_A = hex('f8f30120000100000000000005616c696173076578616d706c6504746573740000010001');
const DNSMASQ_CNAME_A = hex(
  'f8f38580000100020000000005616c696173076578616d706c6504746573740000010001' +
    'c00c000500010000012c0015 06746172676574076578616d706c65047465737400' +
    'c030000100010000012c0004c0000214',
);
// `dig v6.example.test AAAA` (EDNS0, udp 1232) and dnsmasq's answer.
const DIG_QUERY_AAAA = hex('2c2401200001000000000001027636076578616d706c65047465737400001c000100002904d0000000000000');
const DNSMASQ_AAAA = hex(
  '2c2485800001000100000001027636076578616d706c65047465737400001c0001' +
    'c00c001c00010000012c001020010db8000000000000000000000010' +
    '00002904d0000000000000',
);

t.test('parses a dig query and a dnsmasq CNAME chain answer with compression in RDATA', async (t) => {
  const q = parseMessage(DIG_QUERY_A)!;
  t.ok(q);
  t.equal(q.id, 0xf8f3);
  t.equal(q.qr, false);
  t.equal(q.rd, true);
  t.equal(q.ad, true);
  t.equal(q.opt, null);
  t.same(
    q.questions.map((x) => [x.name, x.type, x.class]),
    [['alias.example.test', DnsType.A, 1]],
  );
  t.equal(q.questionEnd, DIG_QUERY_A.length);

  const r = parseMessage(DNSMASQ_CNAME_A)!;
  t.equal(r.qr, true);
  t.equal(r.aa, true);
  t.equal(r.ra, true);
  t.equal(r.rcode, DnsRcode.NoError);
  t.equal(r.answers.length, 2);
  const [cname, a] = r.answers;
  t.equal(cname!.name, 'alias.example.test');
  t.equal(cname!.type, DnsType.CNAME);
  t.equal(cname!.ttl, 300);
  t.equal(cname!.target, 'target.example.test');
  t.equal(a!.name, 'target.example.test', 'owner via a pointer into the CNAME RDATA');
  t.equal(a!.address, '192.0.2.20');
  t.equal(a!.ttlOffset, DNSMASQ_CNAME_A.length - 10);
  t.equal(a!.end, DNSMASQ_CNAME_A.length);
});

t.test('parses AAAA (RFC 3596) and the EDNS0 OPT pseudo-record', async (t) => {
  const q = parseMessage(DIG_QUERY_AAAA)!;
  t.equal(q.opt?.udpSize, 1232);
  t.equal(q.opt?.version, 0);
  t.equal(q.opt?.dnssecOk, false);
  t.equal(q.additionals.length, 0, 'OPT is not listed among the additionals');
  const r = parseMessage(DNSMASQ_AAAA)!;
  t.equal(r.answers[0]!.address, '2001:db8::10');
  t.equal(r.answers[0]!.type, DnsType.AAAA);
  t.equal(r.opt?.end, DNSMASQ_AAAA.length);
});

t.test('builders reproduce dig and dnsmasq bytes', async (t) => {
  const q = buildQuery({ id: 0x2c24, name: 'v6.example.test', type: DnsType.AAAA, ednsUdpSize: 1232 });
  const digNoAd = DIG_QUERY_AAAA.slice();
  digNoAd[3] = 0x00; // dig also sets AD (RFC 6840 5.7); we do not
  t.equal(toHex(q), toHex(digNoAd));
  const query = parseMessage(DIG_QUERY_AAAA)!;
  const resp = buildAddressResponse(query, ['2001:db8::10'], 300);
  const dnsmasqNoAa = DNSMASQ_AAAA.slice();
  dnsmasqNoAa[2] = 0x81; // dnsmasq is authoritative for its local data; we are not
  t.equal(toHex(resp), toHex(dnsmasqNoAa), 'answer owner compressed to the question (0xc00c), OPT echoed');
});

t.test('error and empty responses keep id, question, RD and set RA', async (t) => {
  const query = parseMessage(DIG_QUERY_A)!;
  const cases: [Uint8Array, number][] = [
    [buildNxDomain(query), DnsRcode.NxDomain],
    [buildServFail(query), DnsRcode.ServFail],
    [buildRefused(query), DnsRcode.Refused],
    [buildEmptyNoError(query), DnsRcode.NoError],
  ];
  for (const [bytes, rcode] of cases) {
    const m = parseMessage(bytes)!;
    t.equal(m.id, 0xf8f3);
    t.equal(m.qr, true);
    t.equal(m.rd, true);
    t.equal(m.ra, true);
    t.equal(m.aa, false);
    t.equal(m.rcode, rcode);
    t.equal(m.answers.length, 0);
    t.equal(m.opt, null, 'no OPT for a query without one');
    t.same(m.questions.map((x) => x.name), ['alias.example.test']);
    t.equal(toHex(bytes.subarray(12)), toHex(DIG_QUERY_A.subarray(12)), 'question bytes identical');
  }
  const soa = {
    name: 'example.test',
    type: DnsType.SOA,
    ttl: 60,
    soa: { mname: 'ns.example.test', rname: 'host.example.test', serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 30 },
  };
  const nx = parseMessage(buildNxDomain(query, soa))!;
  t.equal(nx.authorities[0]!.soa?.minimum, 30);
  t.equal(nx.authorities[0]!.soa?.rname, 'host.example.test');
  const noRd = parseMessage(buildServFail(parseMessage(buildQuery({ id: 7, name: 'x.test', type: 1, rd: false }))!))!;
  t.equal(noRd.rd, false);
  const edns = parseMessage(buildServFail(parseMessage(DIG_QUERY_AAAA)!))!;
  t.equal(edns.opt?.udpSize, 1232, 'OPT echoed to an EDNS client');

  const h = buildHeaderOnlyResponse(0xbeef, 0x0100, DnsRcode.FormErr);
  t.equal(toHex(h), 'beef818100000000' + '00000000');
});

t.test('names: escapes round-trip, limits are enforced', async (t) => {
  const odd = encodeMessage({ id: 1, flags: 0, questions: [{ name: 'a\\.b\\000\\032c.Example', type: 1 }] });
  t.equal(toHex(odd.subarray(12, 12 + 16)), '06612e62002063' + '074578616d706c65' + '00');
  t.equal(parseMessage(odd)!.questions[0]!.name, 'a\\.b\\000\\032c.Example');
  t.equal(canonicalName('WWW.Example.COM.'), 'www.example.com');
  t.same(nameToLabels(''), []);
  t.same(nameToLabels('.'), []);
  t.equal(nameToLabels('a..b'), null);
  t.equal(nameToLabels('x'.repeat(64)), null);
  const l63 = 'x'.repeat(63);
  t.ok(nameToLabels(`${l63}.${l63}.${l63}.${'y'.repeat(61)}`), '255 wire bytes is the maximum');
  t.equal(nameToLabels(`${l63}.${l63}.${l63}.${'y'.repeat(62)}`), null, '256 is too long');
  t.throws(() => buildQuery({ id: 1, name: 'a..b', type: 1 }), { code: 'SLUICE_DNS_BAD_NAME' });
});

function header(qd: number, an = 0, ns = 0, ar = 0, flags = 0x0100): string {
  const h = (n: number): string => n.toString(16).padStart(4, '0');
  return `1234${h(flags)}${h(qd)}${h(an)}${h(ns)}${h(ar)}`;
}

t.test('hostile names never throw and give a reason', async (t) => {
  const cases: [string, string, DnsParseError][] = [
    ['pointer to itself', header(1) + 'c00c00010001', DnsParseError.PointerLoop],
    ['label then pointer back to its own start', header(1) + '0161c00c00010001', DnsParseError.PointerLoop],
    ['forward pointer', header(1) + 'c01000010001' + '0161' + '00', DnsParseError.BadPointer],
    // Record owner points at offset 17 (inside the answer), which points back to 12 -> loop free,
    // but a two-step cycle 12 -> 17 -> 12 is refused because 17 is not before 12.
    ['two-name cycle', header(1, 1) + '03616263' + 'c011' + '00010001' + 'c00c' + '0001000100000000' + '0004' + '01020304', DnsParseError.BadPointer],
    ['extended label type 0x40', header(1) + '4161' + '0000010001', DnsParseError.BadLabelType],
    ['label type 0x80', header(1) + '8161' + '0000010001', DnsParseError.BadLabelType],
    ['name runs off the end', header(1) + '05616263', DnsParseError.Truncated],
    ['pointer cut in half', header(1) + 'c0', DnsParseError.Truncated],
    ['question without type/class', header(1) + '0161' + '00' + '0001', DnsParseError.Truncated],
    ['A with 5 bytes of RDATA', header(1, 1) + '0161000001' + '0001' + 'c00c000100010000003c0005' + '0102030405', DnsParseError.BadRdata],
    ['AAAA with 4 bytes of RDATA', header(1, 1) + '0161000001' + '0001' + 'c00c001c00010000003c0004' + '01020304', DnsParseError.BadRdata],
    ['CNAME RDATA longer than its name', header(1, 1) + '016100' + '00010001' + 'c00c000500010000003c0004' + '01620000', DnsParseError.BadRdata],
    ['RDATA past the end', header(1, 1) + '016100' + '00010001' + 'c00c000100010000003c0004' + '0102', DnsParseError.Truncated],
    ['counts promise more than the bytes hold', header(1, 200), DnsParseError.Truncated],
    ['two OPT records', header(0, 0, 0, 2) + '00002904d0000000000000' + '00002904d0000000000000', DnsParseError.BadOpt],
    ['OPT outside the additional section', header(0, 1) + '00002904d0000000000000', DnsParseError.BadOpt],
    ['OPT with a non-root owner', header(0, 0, 0, 1) + '016100' + '002904d0000000000000', DnsParseError.BadOpt],
  ];
  for (const [what, h, code] of cases) {
    const res = decodeMessage(hex(h));
    t.equal(res.message, null, what);
    t.equal(dnsParseErrorName(res.error), dnsParseErrorName(code), what);
    t.equal(res.id, 0x1234, `${what}: id still reported`);
  }
  t.equal(decodeMessage(new Uint8Array(5)).error, DnsParseError.Truncated);
  t.equal(decodeMessage(new Uint8Array(1)).id, -1);
  t.equal(decodeMessage(new Uint8Array(70000)).error, DnsParseError.MessageTooLong);

  // Oversized names: 5 labels of 63 bytes in place, and a name that grows past
  // 255 bytes only through a pointer to an earlier long name.
  const l63 = '3f' + '61'.repeat(63);
  t.equal(decodeMessage(hex(header(1) + l63.repeat(5) + '00' + '00010001')).error, DnsParseError.NameTooLong);
  const name250 = l63.repeat(3) + '3a' + '62'.repeat(58) + '00'; // 4*1 + 3*63 + 58 + 1 = 252 wire bytes
  const ok = decodeMessage(hex(header(1) + name250 + '00010001'));
  t.ok(ok.message, '252-byte name parses');
  const grown = header(2) + name250 + '00010001' + '0463636363c00c' + '00010001';
  t.equal(decodeMessage(hex(grown)).error, DnsParseError.NameTooLong, 'compression cannot build a >255-byte name');

  // A long but legal pointer chain: each name is one label plus a pointer to the previous.
  const chainOf = (n: number): Uint8Array => {
    let chain = '0161' + '00' + '00010001';
    let prev = 12;
    let off = 12 + 7;
    for (let i = 0; i < n; i++) {
      chain += '0162' + (0xc000 | prev).toString(16) + '00010001';
      prev = off;
      off += 8;
    }
    return hex(header(n + 1) + chain);
  };
  const legal = decodeMessage(chainOf(100));
  t.equal(legal.message?.questions[100]!.name, 'b.'.repeat(100) + 'a', '100 chained pointers are fine');
  const tooLong = decodeMessage(chainOf(130));
  t.equal(tooLong.message, null, 'a chain building a 261-byte name is refused');
  t.ok(['name_too_long', 'pointer_loop'].includes(dnsParseErrorName(tooLong.error)));
});

t.test('every strict prefix of real messages is refused without throwing', async (t) => {
  for (const m of [DIG_QUERY_A, DNSMASQ_CNAME_A, DIG_QUERY_AAAA, DNSMASQ_AAAA]) {
    for (let len = 0; len < m.length; len++) {
      const res = decodeMessage(m.subarray(0, len));
      if (res.message !== null) t.fail(`prefix ${len} of ${toHex(m)} parsed`);
    }
    t.ok(decodeMessage(m).message);
  }
  t.equal(parseMessage(hex(toHex(DIG_QUERY_A) + 'ffff'))?.questions.length, 1, 'trailing bytes are ignored');
});

t.test('unknown types are kept raw and re-emitted', async (t) => {
  const mx = encodeMessage({
    id: 9,
    flags: 0x8180,
    questions: [{ name: 'example.test', type: DnsType.MX }],
    answers: [{ name: 'example.test', type: DnsType.MX, ttl: 60, data: hex('000a') }],
    additionals: [{ name: 'example.test', type: 99, ttl: 5, data: hex('deadbeef') }],
    opt: { udpSize: 4096, dnssecOk: true, options: hex('000a0008' + '0102030405060708') },
  });
  const m = parseMessage(mx)!;
  t.equal(toHex(m.answers[0]!.data), '000a');
  t.equal(m.answers[0]!.address, null);
  t.equal(toHex(m.additionals[0]!.data), 'deadbeef');
  t.equal(m.opt?.dnssecOk, true);
  t.equal(m.opt?.udpSize, 4096);
  t.equal(toHex(m.opt!.options), '000a00080102030405060708', 'EDNS options passed through (a cookie)');
});

t.test('adaptResponse: client id, RD, question spelling (0x20) and OPT removal', async (t) => {
  // Client asks with mixed case and no EDNS; the cached answer came from an EDNS query.
  const clientQuery = buildQuery({ id: 0x4242, name: 'V6.eXample.TEST', type: DnsType.AAAA, rd: false });
  const cq = parseMessage(clientQuery)!;
  const upstream = parseMessage(DNSMASQ_AAAA)!;
  const out = adaptResponse(DNSMASQ_AAAA, upstream, clientQuery, cq);
  const m = parseMessage(out)!;
  t.equal(m.id, 0x4242);
  t.equal(m.rd, false);
  t.equal(m.questions[0]!.name, 'V6.eXample.TEST');
  t.equal(m.opt, null);
  t.equal(out.length, DNSMASQ_AAAA.length - 11);
  t.equal(m.answers[0]!.address, '2001:db8::10');
  t.equal(DNSMASQ_AAAA[0], 0x2c, 'input untouched');
  // A client with EDNS keeps the OPT.
  const withOpt = adaptResponse(DNSMASQ_AAAA, upstream, DIG_QUERY_AAAA, parseMessage(DIG_QUERY_AAAA)!);
  t.equal(parseMessage(withOpt)!.opt?.udpSize, 1232);
});

t.test('TCP framing: two-byte length prefix, reassembled across arbitrary splits', async (t) => {
  const a = frameTcp(DIG_QUERY_A);
  t.equal(a[0], 0);
  t.equal(a[1], DIG_QUERY_A.length);
  const b = frameTcp(DNSMASQ_AAAA);
  const stream = new Uint8Array(a.length + b.length);
  stream.set(a);
  stream.set(b, a.length);
  for (let cut = 0; cut <= stream.length; cut++) {
    const r = new TcpFrameReader();
    r.push(stream.subarray(0, cut));
    const got: string[] = [];
    for (let m = r.next(); m !== null; m = r.next()) got.push(toHex(m));
    r.push(stream.subarray(cut));
    for (let m = r.next(); m !== null; m = r.next()) got.push(toHex(m));
    if (got.length !== 2 || got[0] !== toHex(DIG_QUERY_A) || got[1] !== toHex(DNSMASQ_AAAA)) t.fail(`split at ${cut}`);
    t.equal(r.pending, 0);
  }
  const r = new TcpFrameReader();
  for (const byte of stream) r.push(Uint8Array.of(byte));
  t.equal(toHex(r.next()!), toHex(DIG_QUERY_A));
  t.equal(toHex(r.next()!), toHex(DNSMASQ_AAAA));
  t.equal(r.next(), null);
  t.throws(() => frameTcp(new Uint8Array(65536)), { code: 'SLUICE_DNS_MESSAGE_TOO_LONG' });
});

t.test('responses with many records compress owner names and stay decodable', async (t) => {
  const q = parseMessage(buildQuery({ id: 1, name: 'many.example.test', type: DnsType.A }))!;
  const addrs = Array.from({ length: 40 }, (_, i) => `192.0.2.${i + 1}`);
  const bytes = buildAddressResponse(q, addrs, 30);
  t.equal(bytes.length, 12 + 23 + 40 * 16, 'each A record is 16 bytes thanks to 0xc00c');
  t.same(parseMessage(bytes)!.answers.map((r) => r.address), addrs);
  const big = buildResponse(q, { rcode: 0, answers: Array.from({ length: 2000 }, () => ({ name: "many.example.test", type: DnsType.AAAA, ttl: 1, address: '2001:db8::1' })) });
  t.equal(parseMessage(big)!.answers.length, 2000);
  t.throws(
    () => buildResponse(q, { rcode: 0, answers: Array.from({ length: 3000 }, () => ({ name: 'many.example.test', type: 16, ttl: 1, data: new Uint8Array(40) })) }),
    { code: 'SLUICE_DNS_MESSAGE_TOO_LONG' },
  );
});
