/** SOCKS5 codec (RFC 1928 / RFC 1929) against byte fixtures. */
import t from 'tap';
import {
  Command,
  Method,
  addressLength,
  encodeGreeting,
  encodeRequest,
  encodeUdpHeader,
  encodeUserPass,
  formatIPv6,
  parseMethodSelection,
  parseReply,
  parseUdpHeader,
  parseUserPassStatus,
  readAddress,
  replyLength,
  replyText,
  validateDomain,
} from '../../src/outbound/socks5-codec.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

t.test('greeting and method selection (RFC 1928 §3)', async (t) => {
  t.same(encodeGreeting([Method.NO_AUTH]), hex('05 01 00'));
  t.same(encodeGreeting([Method.NO_AUTH, Method.USERNAME_PASSWORD]), hex('05 02 00 02'));
  t.equal(parseMethodSelection(hex('05 02')), 2);
  t.equal(parseMethodSelection(hex('05 ff')), 0xff);
  t.equal(parseMethodSelection(hex('04 00')), null, 'SOCKS4 answer');
  t.equal(parseMethodSelection(hex('05')), null, 'truncated');
});

t.test('username/password (RFC 1929 §2)', async (t) => {
  t.same(encodeUserPass(Buffer.from('user'), Buffer.from('pw')), hex('01 04 75736572 02 7077'));
  t.equal(parseUserPassStatus(hex('01 00')), 0);
  t.equal(parseUserPassStatus(hex('01 01')), 1);
  t.equal(parseUserPassStatus(hex('05 00')), 0, 'VER 5 tolerated');
  t.equal(parseUserPassStatus(hex('01')), null);
});

t.test('CONNECT requests for each ATYP (RFC 1928 §4, §5)', async (t) => {
  t.same(encodeRequest(Command.CONNECT, '192.0.2.1', 443), hex('05 01 00 01 c0000201 01bb'));
  t.same(encodeRequest(Command.CONNECT, '2001:db8::1', 80), hex('05 01 00 04 20010db8000000000000000000000001 0050'));
  t.same(encodeRequest(Command.CONNECT, '::ffff:192.0.2.1', 80), hex('05 01 00 04 00000000000000000000ffffc0000201 0050'));
  t.same(encodeRequest(Command.CONNECT, 'fe80::1%eth0', 22), hex('05 01 00 04 fe800000000000000000000000000001 0016'), 'zone dropped');
  t.same(encodeRequest(Command.CONNECT, '::', 0), hex('05 01 00 04 00000000000000000000000000000000 0000'));
  t.same(encodeRequest(Command.CONNECT, '1::', 1), hex('05 01 00 04 00010000000000000000000000000000 0001'));
  t.same(encodeRequest(Command.CONNECT, 'example.com', 443), hex('05 01 00 03 0b 6578616d706c652e636f6d 01bb'));
  t.same(encodeRequest(Command.UDP_ASSOCIATE, '0.0.0.0', 0), hex('05 03 00 01 00000000 0000'));
  t.equal(addressLength('10.0.0.1'), 7);
  t.equal(addressLength('::1'), 19);
  t.equal(addressLength('a.b'), 1 + 1 + 3 + 2);
  t.equal(validateDomain(''), 'empty domain');
  t.equal(validateDomain('a'.repeat(255)), null);
  t.match(validateDomain('a'.repeat(256)), /longer than 255/);
});

t.test('replies (RFC 1928 §6)', async (t) => {
  const v4 = hex('05 00 00 01 7f000001 1f90');
  t.equal(replyLength(v4.subarray(0, 5)), 10);
  t.same(parseReply(v4), { rep: 0, bound: { host: '127.0.0.1', port: 8080 } });
  const v6 = hex('05 05 00 04 00000000000000000000000000000001 0000');
  t.equal(replyLength(v6.subarray(0, 5)), 22);
  t.same(parseReply(v6), { rep: 5, bound: { host: '::1', port: 0 } });
  const dom = hex('05 00 00 03 09 6c6f63616c686f7374 0438');
  t.equal(replyLength(dom.subarray(0, 5)), 4 + 1 + 9 + 2);
  t.same(parseReply(dom), { rep: 0, bound: { host: 'localhost', port: 1080 } });
  t.equal(replyLength(hex('05 00 00 02 00')), null, 'ATYP 2 is not defined');
  t.equal(replyLength(hex('00 5a 00 00 00')), null, 'SOCKS4 reply');
  t.equal(replyLength(hex('05 00 00 01')), null, 'head too short');
  t.equal(parseReply(v4.subarray(0, 9)), null, 'truncated port');
  t.equal(replyText(5), 'connection refused');
  t.equal(replyText(0x42), 'unassigned reply 0x42');
});

t.test('UDP request header (RFC 1928 §7)', async (t) => {
  t.same(encodeUdpHeader('198.51.100.7', 53), hex('0000 00 01 c6336407 0035'));
  t.same(encodeUdpHeader('dns.example', 53), hex('0000 00 03 0b 646e732e6578616d706c65 0035'));
  const dg = Buffer.concat([hex('0000 00 04 20010db8000000000000000000000002 1234'), Buffer.from('payload')]);
  const p = parseUdpHeader(dg);
  t.same(p, { frag: 0, host: '2001:db8::2', port: 0x1234, dataOffset: 22 });
  t.equal(dg.subarray(p!.dataOffset).toString(), 'payload');
  t.equal(parseUdpHeader(hex('0000 01 01 7f000001 0035 ff'))!.frag, 1, 'fragment reported');
  t.equal(parseUdpHeader(hex('0001 00 01 7f000001 0035')), null, 'RSV must be zero');
  t.equal(parseUdpHeader(hex('0000 00 01 7f0000')), null, 'truncated address');
  t.equal(parseUdpHeader(hex('0000 00 03 05 6162')), null, 'truncated domain');
  t.equal(parseUdpHeader(hex('0000 00 09 00')), null, 'unknown ATYP');
  t.same(parseUdpHeader(hex('0000 00 01 7f000001 0035')), { frag: 0, host: '127.0.0.1', port: 53, dataOffset: 10 }, 'empty payload');
});

t.test('IPv6 text form (RFC 5952)', async (t) => {
  const f = (h: string): string => formatIPv6(hex(h), 0);
  t.equal(f('20010db8000000000000000000000001'), '2001:db8::1');
  t.equal(f('00000000000000000000000000000000'), '::');
  t.equal(f('00000000000000000000000000000001'), '::1');
  t.equal(f('20010db8000000010001000100010001'), '2001:db8:0:1:1:1:1:1', 'single zero group not compressed');
  t.equal(f('20010000000000010000000000000001'), '2001:0:0:1::1', 'longest run wins');
  t.equal(f('00000000000000000000ffffc0000201'), '::ffff:192.0.2.1');
  t.equal(f('fe800000000000000000000000000000'), 'fe80::');
  t.same(readAddress(hex('04 20010db8000000000000000000000001 0050'), 0), { host: '2001:db8::1', port: 80, end: 19 });
});
