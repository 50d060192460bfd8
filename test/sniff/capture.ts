/**
 * Real fixtures: servers on loopback that record the first bytes a real
 * client sends (Node's TLS and HTTP stacks, curl, c-ares via node:dns, dig).
 * Servers listen on port 0; spawned clients are killed by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import { Resolver } from 'node:dns/promises';
import { concat } from './fixtures.js';

/** True when `b` holds a whole ClientHello in records (checked independently of src/). */
function helloComplete(b: Uint8Array): boolean {
  let p = 0;
  let payload = 0;
  let need = -1;
  const frag: number[] = [];
  while (p + 5 <= b.length) {
    const len = (b[p + 3]! << 8) | b[p + 4]!;
    if (p + 5 + len > b.length) return false;
    for (let i = 0; i < len && frag.length < 4; i++) frag.push(b[p + 5 + i]!);
    payload += len;
    p += 5 + len;
    if (frag.length >= 4) need = 4 + ((frag[1]! << 16) | (frag[2]! << 8) | frag[3]!);
    if (need >= 0 && payload >= need) return true;
  }
  return false;
}

/** Runs a TCP server on `host`, resolves with the first bytes once `done(bytes)` says so. */
async function tcpCapture(
  host: string,
  done: (b: Uint8Array) => boolean,
  startClient: (port: number) => ChildProcess | (() => void),
  timeoutMs = 5000,
): Promise<Uint8Array> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const stopper: { fn: (() => void) | null } = { fn: null };
  try {
    return await new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('capture timed out')), timeoutMs);
      server.on('connection', (sock) => {
        let got: Uint8Array = new Uint8Array(0);
        sock.on('error', () => {});
        sock.on('data', (d: Buffer) => {
          got = concat(got, new Uint8Array(d));
          if (done(got)) {
            clearTimeout(timer);
            sock.destroy();
            resolve(got);
          }
        });
      });
      const c = startClient(port);
      if (typeof c === 'function') stopper.fn = c;
      else {
        c.on('error', (e) => reject(e));
        stopper.fn = () => {
          if (c.exitCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
        };
      }
    });
  } finally {
    stopper.fn?.();
    server.close();
  }
}

/** A ClientHello from Node's TLS client. */
export function captureNodeClientHello(options: tls.ConnectionOptions): Promise<Uint8Array> {
  return tcpCapture('127.0.0.1', helloComplete, (port) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    s.on('error', () => {});
    return () => s.destroy();
  });
}

/** A ClientHello from curl (OpenSSL), SNI www.example.com, ALPN h2/http1.1. */
export function captureCurlClientHello(name: string): Promise<Uint8Array> {
  return tcpCapture('127.0.0.1', helloComplete, (port) =>
    spawn('curl', ['-sk', '--max-time', '5', '--resolve', `${name}:${port}:127.0.0.1`, `https://${name}:${port}/`], {
      stdio: 'ignore',
    }),
  );
}

function headComplete(b: Uint8Array): boolean {
  return Buffer.from(b).includes('\r\n\r\n');
}

/** A request head from Node's HTTP client. */
export function captureNodeHttp(options: http.RequestOptions, host = '127.0.0.1'): Promise<Uint8Array> {
  return tcpCapture(host, headComplete, (port) => {
    const req = http.request({ host, port, agent: false, ...options });
    req.on('error', () => {});
    req.end();
    return () => req.destroy();
  });
}

/** A request head from curl with extra arguments; `url(port)` builds the URL. */
export function captureCurlHttp(args: (port: number) => string[], host = '127.0.0.1'): Promise<Uint8Array> {
  return tcpCapture(host, headComplete, (port) => spawn('curl', ['-s', '--max-time', '5', ...args(port)], { stdio: 'ignore' }));
}

export interface DnsCapture {
  udp: Uint8Array;
  tcp: Uint8Array;
}

/**
 * A query from c-ares (node:dns) over UDP, then over TCP: the UDP answer
 * echoes the query with TC=1, so the resolver retries over TCP (RFC 7766 §5).
 */
export async function captureNodeDns(name: string): Promise<DnsCapture> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    const port = udp.address().port;
    const tcpServer = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      tcpServer.once('error', () => resolve(false));
      tcpServer.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!ok) {
      udp.close();
      if (attempt > 5) throw new Error('no free port pair');
      continue;
    }
    try {
      const udpBytes = new Promise<Uint8Array>((resolve) => {
        udp.once('message', (msg, rinfo) => {
          const reply = Buffer.from(msg);
          reply[2] = reply[2]! | 0x82; // QR + TC
          udp.send(reply, rinfo.port, rinfo.address);
          resolve(new Uint8Array(msg));
        });
      });
      const tcpBytes = new Promise<Uint8Array>((resolve) => {
        tcpServer.on('connection', (sock) => {
          let got: Uint8Array = new Uint8Array(0);
          sock.on('error', () => {});
          sock.on('data', (d: Buffer) => {
            got = concat(got, new Uint8Array(d));
            if (got.length >= 2 && got.length >= 2 + ((got[0]! << 8) | got[1]!)) {
              sock.destroy();
              resolve(got);
            }
          });
        });
      });
      const resolver = new Resolver({ timeout: 2000, tries: 1 });
      resolver.setServers([`127.0.0.1:${port}`]);
      const pending = resolver.resolve4(name).catch(() => null);
      const result = { udp: await udpBytes, tcp: await tcpBytes };
      resolver.cancel();
      await pending;
      return result;
    } finally {
      udp.close();
      tcpServer.close();
    }
  }
}

/** A query from dig over UDP (dig sets AD and an EDNS cookie by default). */
export async function captureDigUdp(name: string, qtype: string): Promise<Uint8Array> {
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const port = udp.address().port;
  let child: ChildProcess | null = null;
  try {
    return await new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('dig capture timed out')), 5000);
      udp.once('message', (msg) => {
        clearTimeout(timer);
        resolve(new Uint8Array(msg));
      });
      child = spawn('dig', [`@127.0.0.1`, '-p', String(port), name, qtype, '+tries=1', '+time=1'], { stdio: 'ignore' });
      child.on('error', reject);
    });
  } finally {
    const c = child as ChildProcess | null;
    if (c !== null && c.exitCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
    udp.close();
  }
}
