/**
 * The native socketOwner (NETLINK_SOCK_DIAG, native/src/sockdiag.c) on
 * loopback: it finds a TCP connection and a UDP socket (connected or not)
 * by the 4-tuple seen from the socket's own side, IPv4, IPv6 and an
 * IPv4-mapped IPv6 socket; the inode is the one /proc/self/fd shows and the
 * uid is ours; a 4-tuple nobody holds gives null; bad arguments throw the
 * usage error. Needs no privilege.
 */
import t from 'tap';
import net from 'node:net';
import dgram from 'node:dgram';
import { readdirSync, readlinkSync } from 'node:fs';
import { loadNative } from '../../src/link/native.js';

const native = loadNative();
const V4 = new Uint8Array([127, 0, 0, 1]);
const V6 = new Uint8Array(16);
V6[15] = 1;

/** The socket inodes this process holds (from /proc/self/fd). */
function ourSocketInodes(): Set<number> {
  const out = new Set<number>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m !== null) out.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

async function connection(host: string): Promise<{ client: net.Socket; server: net.Server; port: number }> {
  const server = net.createServer(() => {});
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, host);
  await new Promise<void>((r) => client.once('connect', r));
  t.teardown(() => {
    client.destroy();
    server.close();
  });
  return { client, server, port };
}

t.test('TCP, IPv4 and IPv6: found from the client side, with our uid and a socket inode we hold', async (t) => {
  for (const [host, family, addr] of [
    ['127.0.0.1', 4, V4],
    ['::1', 6, V6],
  ] as const) {
    const { client, port } = await connection(host);
    const found = native.socketOwner('tcp', family, addr, client.localPort!, addr, port);
    t.ok(found !== null, `IPv${family}: found`);
    t.equal(found!.uid, process.getuid!(), `IPv${family}: our uid`);
    t.ok(ourSocketInodes().has(found!.inode), `IPv${family}: the inode is one of our sockets`);
    const server = native.socketOwner('tcp', family, addr, port, addr, client.localPort!);
    t.ok(server !== null && server.inode !== found!.inode, `IPv${family}: the other orientation is the accepted socket, another one`);
    t.equal(native.socketOwner('tcp', family, addr, 1, addr, 2), null, `IPv${family}: nobody's 4-tuple gives null`);
  }
});

t.test('UDP, connected and not', async (t) => {
  const peer = dgram.createSocket('udp4');
  await new Promise<void>((r) => peer.bind(0, '127.0.0.1', r));
  const peerPort = peer.address().port;
  const loose = dgram.createSocket('udp4');
  await new Promise<void>((r) => loose.send('x', peerPort, '127.0.0.1', () => r()));
  const tight = dgram.createSocket('udp4');
  await new Promise<void>((r) => tight.connect(peerPort, '127.0.0.1', () => r()));
  t.teardown(() => {
    peer.close();
    loose.close();
    tight.close();
  });
  const inodes = ourSocketInodes();
  const a = native.socketOwner('udp', 4, V4, loose.address().port, V4, peerPort);
  t.ok(a !== null && inodes.has(a.inode), 'an unconnected socket bound to 0.0.0.0 is found by the addresses its datagram carried');
  const b = native.socketOwner('udp', 4, V4, tight.address().port, V4, peerPort);
  t.ok(b !== null && inodes.has(b.inode) && b.inode !== a!.inode, 'a connected socket is found, another inode');
});

t.test('bad arguments throw the usage error', async (t) => {
  const call = native.socketOwner as unknown as (...a: unknown[]) => unknown;
  for (const args of [
    ['sctp', 4, V4, 1, V4, 2],
    ['tcp', 5, V4, 1, V4, 2],
    ['tcp', 6, V4, 1, V4, 2],
    ['tcp', 4, V4, 70000, V4, 2],
    ['tcp', 4, 'x', 1, V4, 2],
    ['tcp', 4, V4],
  ]) {
    t.throws(() => call(...args), { code: 'SLUICE_NATIVE_USAGE', message: /socketOwner\(protocol/ }, JSON.stringify(args));
  }
});
