/**
 * Loopback servers for the outbound tests: node echo servers (TCP, UDP)
 * and the real proxies (microsocks, danted, tinyproxy) started as child
 * processes on dynamic ports. Every child is killed by its PID in teardown.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';

interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

/** An ephemeral port nobody listens on right now (TCP and UDP both free on 127.0.0.1). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (;;) {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, host, r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const u = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const ok = await new Promise<boolean>((r) => {
      u.once('error', () => r(false));
      u.bind(port, host, () => r(true));
    });
    if (ok) u.close();
    if (ok) return port;
  }
}

/** TCP echo server on [::] (IPv4 and IPv6). */
export async function echoServer(t: Teardown): Promise<{ port: number; connections: () => number }> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    n++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => srv.listen(0, '::', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  return { port: (srv.address() as net.AddressInfo).port, connections: () => n };
}

/** UDP echo server; replies "echo:" + payload to the sender. */
export async function udpEchoServer(t: Teardown, family: 4 | 6 = 4): Promise<{ port: number; seen: Array<{ address: string; port: number }> }> {
  const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  const seen: Array<{ address: string; port: number }> = [];
  sock.on('message', (msg, rinfo) => {
    seen.push({ address: rinfo.address, port: rinfo.port });
    sock.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, family === 6 ? '::1' : '127.0.0.1', r));
  t.teardown(() => {
    sock.close();
  });
  return { port: sock.address().port, seen };
}

/** Deterministic pseudo-random bytes. */
export function blob(n: number, seed = 0x12345678): Buffer {
  const b = Buffer.allocUnsafe(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    b[i] = s & 0xff;
  }
  return b;
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Writes `data` into the stream (honouring backpressure) while collecting `expect` bytes back; resolves with the SHA-256 of what came back. */
export async function roundTrip(stream: Duplex, data: Buffer, expect = data.length): Promise<string> {
  const h = createHash('sha256');
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    stream.on('data', (d: Buffer) => {
      h.update(d);
      got += d.length;
      if (got >= expect) resolve();
    });
    stream.on('error', reject);
    stream.on('end', () => (got >= expect ? resolve() : reject(new Error(`stream ended after ${got} of ${expect} bytes`))));
  });
  const CH = 64 * 1024;
  for (let o = 0; o < data.length; o += CH) {
    if (!stream.write(data.subarray(o, o + CH))) await new Promise((r) => stream.once('drain', r));
  }
  await done;
  return h.digest('hex');
}

/** Resolves once host:port accepts TCP connections (the child is up). */
export async function waitListening(host: string, port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode} before listening`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} is not listening on ${host}:${port} after 5 s`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface Child {
  proc: ChildProcess;
  port: number;
  output: () => string;
}

/** Spawns a server binary; teardown kills it by PID (SIGTERM, then SIGKILL after 2 s). */
export async function startChild(t: Teardown, bin: string, args: string[], port: number, what: string): Promise<Child> {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    if (out.length < 65536) out += d.toString();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    if (out.length < 65536) out += d.toString();
  });
  const spawned = new Promise<void>((resolve, reject) => {
    proc.once('spawn', resolve);
    proc.once('error', (e) => reject(new Error(`${what}: cannot start ${bin}: ${e.message} (is the package installed?)`)));
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null || proc.pid === undefined) {
          resolve();
          return;
        }
        const kill = setTimeout(() => process.kill(proc.pid!, 'SIGKILL'), 2000);
        proc.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        process.kill(proc.pid, 'SIGTERM');
      }),
  );
  await spawned;
  await waitListening('127.0.0.1', port, proc, what);
  return { proc, port, output: () => out };
}

export function tempDir(t: Teardown): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-outbound-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function startMicrosocks(t: Teardown, auth?: { user: string; pass: string }): Promise<Child> {
  const port = await freePort();
  const args = ['-i', '127.0.0.1', '-p', String(port)];
  if (auth) args.push('-u', auth.user, '-P', auth.pass);
  return startChild(t, 'microsocks', args, port, 'microsocks');
}

/** danted with no authentication, allowing CONNECT and UDP ASSOCIATE from loopback, relaying via lo. */
export async function startDanted(t: Teardown): Promise<Child> {
  const port = await freePort();
  const dir = tempDir(t);
  const conf = path.join(dir, 'danted.conf');
  writeFileSync(
    conf,
    [
      'logoutput: stderr',
      `internal: 127.0.0.1 port = ${port}`,
      'external: lo',
      'socksmethod: none',
      'clientmethod: none',
      'user.privileged: root',
      'user.unprivileged: nobody',
      'client pass {',
      '  from: 127.0.0.0/8 to: 0.0.0.0/0',
      '  log: error',
      '}',
      'socks pass {',
      '  from: 0.0.0.0/0 to: 0.0.0.0/0',
      '  command: connect udpassociate udpreply',
      '  log: error',
      '}',
      '',
    ].join('\n'),
  );
  return startChild(t, '/usr/sbin/danted', ['-f', conf, '-N', '1'], port, 'danted');
}

export async function startTinyproxy(t: Teardown, opts: { connectPorts: number[]; auth?: { user: string; pass: string } }): Promise<Child> {
  const port = await freePort();
  const dir = tempDir(t);
  const conf = path.join(dir, 'tinyproxy.conf');
  const lines = [
    `Port ${port}`,
    'Listen 127.0.0.1',
    'Timeout 30',
    'MaxClients 64',
    'LogLevel Info',
    'Allow 127.0.0.1',
    ...opts.connectPorts.map((p) => `ConnectPort ${p}`),
  ];
  if (process.getuid?.() === 0) lines.push('User nobody', 'Group nogroup');
  if (opts.auth) lines.push(`BasicAuth ${opts.auth.user} ${opts.auth.pass}`);
  writeFileSync(conf, lines.join('\n') + '\n');
  return startChild(t, 'tinyproxy', ['-d', '-c', conf], port, 'tinyproxy');
}
