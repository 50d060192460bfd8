/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §7) against danted on loopback, to a node
 * UDP echo server; plus a scripted relay for fragments, spoofed sources and
 * the control connection closing.
 */
import t from 'tap';
import type { Test } from 'tap';
import dgram from 'node:dgram';
import net from 'node:net';
import { Socks5Outbound } from '../../src/outbound/socks5.js';
import { startDanted, udpEchoServer } from './servers.js';

t.test('danted: UDP ASSOCIATE to a UDP echo server', async (t) => {
  const echo = await udpEchoServer(t, 4);
  const dante = await startDanted(t);
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(dante.output());
  });
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: dante.port, udp: true, connectTimeoutMs: 3000 });
  const assoc = await ob.openUdp({ family: 4 });
  t.teardown(() => assoc.close());
  const got: string[] = [];
  const srcs: string[] = [];
  const three = new Promise<void>((resolve) =>
    assoc.onMessage((payload, src) => {
      got.push(Buffer.from(payload).toString());
      srcs.push(`${src.host}:${src.port}`);
      if (got.length === 3) resolve();
    }),
  );
  for (const m of ['one', 'two', 'three']) assoc.send(Buffer.from(m), { host: '127.0.0.1', port: echo.port });
  await three;
  t.same(got.sort(), ['echo:one', 'echo:three', 'echo:two']);
  t.same(srcs, Array(3).fill(`127.0.0.1:${echo.port}`), 'the relay reports the echo server as the source');
  t.equal(assoc.stats.receiveDropped, 0);
});

t.test('danted: domain destination (ATYP 3) and local close', async (t) => {
  const echo = await udpEchoServer(t, 4);
  const dante = await startDanted(t);
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: dante.port, udp: true, connectTimeoutMs: 3000 });
  const assoc = await ob.openUdp();
  const reply = new Promise<string>((resolve) => assoc.onMessage((p) => resolve(Buffer.from(p).toString())));
  // danted resolves the name ("localhost" from /etc/hosts).
  assoc.send(Buffer.from('by-name'), { host: 'localhost', port: echo.port });
  t.equal(await reply, 'echo:by-name');
  let closedWith: Error | null | undefined;
  assoc.onClose((err) => (closedWith = err));
  assoc.close();
  t.equal(closedWith, null);
  t.ok(assoc.closed);
  assoc.send(Buffer.from('late'), { host: '127.0.0.1', port: echo.port });
  t.equal(assoc.stats.sendDropped, 1);
});

/** A scripted SOCKS5 server answering UDP ASSOCIATE with BND 0.0.0.0:relayPort, and its relay socket. */
async function scriptedRelay(t: Test): Promise<{
  port: number;
  relay: dgram.Socket;
  requests: Buffer[];
  control: Promise<net.Socket>;
  clientAddr: Promise<dgram.RemoteInfo>;
}> {
  const relay = dgram.createSocket('udp4');
  await new Promise<void>((r) => relay.bind(0, '127.0.0.1', r));
  t.teardown(() => {
    relay.close();
  });
  const requests: Buffer[] = [];
  let gotControl!: (s: net.Socket) => void;
  const control = new Promise<net.Socket>((r) => (gotControl = r));
  let gotClient!: (r: dgram.RemoteInfo) => void;
  const clientAddr = new Promise<dgram.RemoteInfo>((r) => (gotClient = r));
  relay.on('message', (msg, rinfo) => {
    requests.push(msg);
    gotClient(rinfo);
  });
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    let stage = 0;
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (stage === 0 && buf.length >= 3) {
        buf = buf.subarray(3);
        s.write(Buffer.from('0500', 'hex'));
        stage = 1;
      }
      if (stage === 1 && buf.length >= 10) {
        requests.push(buf.subarray(0, 10));
        buf = buf.subarray(10);
        const reply = Buffer.from('05000001000000000000', 'hex');
        reply.writeUInt16BE(relay.address().port, 8);
        s.write(reply);
        stage = 2;
        gotControl(s);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        srv.close(() => r());
      }),
  );
  return { port: (srv.address() as net.AddressInfo).port, relay, requests, control, clientAddr };
}

const send = (sock: dgram.Socket, msg: Buffer, port: number, host: string): Promise<void> =>
  new Promise((r, j) => sock.send(msg, port, host, (e) => (e ? j(e) : r())));

t.test('relay datagrams: header on the wire, fragments / strangers / garbage dropped, closes with the control connection', async (t) => {
  const r = await scriptedRelay(t);
  const ob = new Socks5Outbound({ name: 'proxy', server: '127.0.0.1', port: r.port, udp: true });
  const assoc = await ob.openUdp();
  t.teardown(() => assoc.close());
  t.same(r.requests[0], Buffer.from('05030001000000000000', 'hex'), 'UDP ASSOCIATE announces 0.0.0.0:0');
  t.same((assoc as unknown as { relay: unknown }).relay, { host: '127.0.0.1', port: r.relay.address().port }, 'BND 0.0.0.0 means the server address');

  assoc.send(Buffer.from('query'), { host: '198.51.100.9', port: 53 });
  const client = await r.clientAddr;
  t.same(r.requests[1], Buffer.concat([Buffer.from('000000 01 c6336409 0035'.replace(/ /g, ''), 'hex'), Buffer.from('query')]));

  const received: Array<[string, string]> = [];
  const good = new Promise<void>((resolve) =>
    assoc.onMessage((p, src) => {
      received.push([Buffer.from(p).toString(), `${src.host}:${src.port}`]);
      resolve();
    }),
  );
  const stranger = dgram.createSocket('udp4');
  t.teardown(() => {
    stranger.close();
  });
  const hdr = Buffer.from('000000' + '04' + '20010db8000000000000000000000009' + '0035', 'hex');
  await send(r.relay, Buffer.concat([Buffer.from('000001 01 c6336409 0035'.replace(/ /g, ''), 'hex'), Buffer.from('frag')]), client.port, client.address);
  await send(stranger, Buffer.concat([Buffer.from('000000 01 c6336409 0035'.replace(/ /g, ''), 'hex'), Buffer.from('spoof')]), client.port, client.address);
  await send(r.relay, Buffer.from('0000 00 07'.replace(/ /g, ''), 'hex'), client.port, client.address);
  await send(r.relay, Buffer.concat([hdr, Buffer.from('answer')]), client.port, client.address);
  await good;
  t.same(received, [['answer', '2001:db8::9:53']], 'only the well-formed, unfragmented datagram from the relay');
  t.same(assoc.stats, { sent: 1, received: 1, sendDropped: 0, receiveDropped: 3 });

  const closed = new Promise<Error | null>((resolve) => assoc.onClose(resolve));
  (await r.control).destroy();
  t.equal(await closed, null, 'control connection closed -> association closed');
  t.ok(assoc.closed);
});
