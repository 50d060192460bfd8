/**
 * Test fixtures for the DNS tests: a real dnsmasq on 127.0.0.1 at a free
 * port, a throwaway self-signed certificate, and a DoH server. Only the PIDs started here
 * are killed, in t.teardown.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import http2 from 'node:http2';
import { buildQuery, decodeMessage, parseMessage } from '../../src/dns/message.js';
import type { Resolver } from '../../src/dns/resolver.js';

export const DNSMASQ = '/usr/sbin/dnsmasq';

/** A port free for both UDP and TCP on 127.0.0.1 at the time of asking. */
export async function freePort(): Promise<number> {
  for (;;) {
    const u = dgram.createSocket('udp4');
    await new Promise<void>((res) => u.bind(0, '127.0.0.1', res));
    const port = u.address().port;
    const ok = await new Promise<boolean>((res) => {
      const s = net.createServer();
      s.once('error', () => res(false));
      s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
    });
    u.close();
    if (ok) return port;
  }
}

async function probe(port: number): Promise<boolean> {
  const s = dgram.createSocket('udp4');
  try {
    return await new Promise<boolean>((res) => {
      const timer = setTimeout(() => res(false), 100);
      s.on('error', () => {
        clearTimeout(timer);
        res(false);
      });
      s.on('message', (m) => {
        clearTimeout(timer);
        res(parseMessage(m)?.qr === true);
      });
      s.send(buildQuery({ id: 1, name: 'probe.example.test', type: 1 }), port, '127.0.0.1');
    });
  } finally {
    s.close();
  }
}

export interface Dnsmasq {
  port: number;
  proc: ChildProcess;
}

/**
 * dnsmasq answering example.test (192.0.2.10 for any name under it),
 * v6.example.test AAAA 2001:db8::10, alias.example.test CNAME
 * target.example.test (192.0.2.20), TXT for txt.example.test; nothing else
 * (no upstreams: other names get REFUSED). TTL 300.
 */
export async function startDnsmasq(t: Test, extra: string[] = []): Promise<Dnsmasq> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const proc = spawn(
      DNSMASQ,
      [
        '--no-daemon',
        '--no-resolv',
        '--no-hosts',
        '--conf-file=/dev/null',
        `--port=${port}`,
        '--listen-address=127.0.0.1',
        '--bind-interfaces',
        '--pid-file=',
        '--user=',
        '--local-ttl=300',
        '--address=/example.test/192.0.2.10',
        '--host-record=v6.example.test,2001:db8::10',
        '--host-record=target.example.test,192.0.2.20',
        '--cname=alias.example.test,target.example.test',
        '--txt-record=txt.example.test,hello world',
        ...extra,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let exited = false;
    proc.once('exit', () => (exited = true));
    const spawnError = await new Promise<Error | null>((res) => {
      proc.once('error', res);
      proc.once('spawn', () => res(null));
    });
    if (spawnError) throw new Error(`cannot start ${DNSMASQ}: ${spawnError.message} (install dnsmasq-base)`);
    t.teardown(() => {
      if (!exited) proc.kill('SIGTERM');
    });
    for (let i = 0; i < 60 && !exited; i++) {
      if (await probe(port)) return { port, proc };
    }
    if (!exited) proc.kill('SIGTERM');
    if (!/Address already in use|failed to create listening socket/.test(stderr)) throw new Error(`dnsmasq did not come up: ${stderr}`);
  }
  throw new Error('dnsmasq: no free port after 5 attempts');
}

export interface Cert {
  key: string;
  cert: string;
}

/** A self-signed certificate for 127.0.0.1 / localhost, made with openssl in a temp dir. */
export async function selfSignedCert(t: Test): Promise<Cert> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-dns-cert-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await promisify(execFile)('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    join(dir, 'key.pem'),
    '-out',
    join(dir, 'cert.pem'),
    '-days',
    '1',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ]);
  return { key: await readFile(join(dir, 'key.pem'), 'utf8'), cert: await readFile(join(dir, 'cert.pem'), 'utf8') };
}

/** A DoH server (RFC 8484 POST) on node:http2 with TLS, forwarding to `upstream`. */
export async function dohServer(
  t: Test,
  upstream: Resolver,
  seen: { method: string; type: string; id: number; alpn: string }[],
): Promise<{ url: string; ca: string }> {
  const { key, cert } = await selfSignedCert(t);
  const server = http2.createSecureServer({ key, cert, allowHTTP1: true }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const m = decodeMessage(body);
      seen.push({ method: req.method, type: String(req.headers['content-type']), id: m.id, alpn: req.httpVersion });
      if (req.url === '/status') {
        res.writeHead(503).end();
        return;
      }
      if (req.url === '/html') {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>');
        return;
      }
      upstream.query(body).then(
        (a) => res.writeHead(200, { 'content-type': 'application/dns-message', 'content-length': a.length }).end(Buffer.from(a)),
        () => res.writeHead(502).end(),
      );
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  t.teardown(() => server.close());
  return { url: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`, ca: cert };
}
