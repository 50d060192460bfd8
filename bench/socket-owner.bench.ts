/**
 * Cost of the socket-owner lookup behind uid / processName / processPath
 * rules (src/system/socket-owner.ts): the NETLINK_SOCK_DIAG query alone,
 * and whole lookups (query + /proc walk + exe) cold (a fresh lookup object:
 * no hot process, the walk goes newest process first), warm (another socket
 * of a process that owned a recent one) and cached (the same 4-tuple within
 * the TTL). A child process holds the client sockets, as a real client
 * would (sluice never looks for its own sockets). Figures are wall-clock
 * and process CPU per lookup, medians of a few runs; the machine's process
 * count is printed, since a cold walk grows with it.
 *   npm run build && node dist/bench/socket-owner.bench.js
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { loadNative } from '../src/link/native.js';
import { SocketOwnerLookup } from '../src/system/socket-owner.js';

const N = 200;
const LO = new Uint8Array([127, 0, 0, 1]);

async function main(): Promise<void> {
  const native = loadNative();
  const server = net.createServer(() => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  // The child opens N connections and prints each local port.
  const child = spawn(process.execPath, ['-e', `
    const net = require('net'); const ports = []; let n = 0;
    for (let i = 0; i < ${N}; i++) { const s = net.connect(${port}, '127.0.0.1', () => { ports.push(s.localPort); if (++n === ${N}) console.log(JSON.stringify(ports)); }); }
    setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ports = await new Promise<number[]>((resolve) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) resolve(JSON.parse(buf) as number[]);
    });
  });
  const procs = readdirSync('/proc').filter((e) => /^[0-9]+$/.test(e)).length;
  const diag = (p: 'tcp' | 'udp', f: 4 | 6, l: Uint8Array, lp: number, r: Uint8Array, rp: number) => native.socketOwner(p, f, l, lp, r, rp);

  const time = async (what: string, fn: (i: number) => unknown): Promise<void> => {
    const runs: { us: number; cpu: number }[] = [];
    for (let run = 0; run < 3; run++) {
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < ports.length; i++) await fn(i);
      const us = Number(process.hrtime.bigint() - t0) / 1000 / ports.length;
      const c = process.cpuUsage(c0);
      runs.push({ us, cpu: (c.user + c.system) / ports.length });
    }
    runs.sort((a, b) => a.us - b.us);
    const m = runs[1]!;
    console.log(`${what.padEnd(44)} ${m.us.toFixed(1).padStart(9)} us wall  ${m.cpu.toFixed(1).padStart(9)} us CPU   (runs: ${runs.map((r) => r.us.toFixed(0)).join(', ')})`);
  };

  console.log(`socket-owner lookups, ${ports.length} sockets held by one child, ${procs} processes on this machine`);
  await time('sock_diag query alone', (i) => diag('tcp', 4, LO, ports[i]!, LO, port));
  let found = 0;
  await time('lookup, cold (fresh object: walk /proc)', async (i) => {
    const o = await new SocketOwnerLookup({ sockDiag: diag }).lookup('tcp', 4, LO, ports[i]!, LO, port);
    if (o?.pid === child.pid) found++;
  });
  const warm = new SocketOwnerLookup({ sockDiag: diag, ttlMs: 0 });
  await warm.lookup('tcp', 4, LO, ports[0]!, LO, port);
  await time('lookup, warm (owner of a recent socket)', (i) => warm.lookup('tcp', 4, LO, ports[i]!, LO, port));
  const cached = new SocketOwnerLookup({ sockDiag: diag, ttlMs: 60_000 });
  for (const p of ports) await cached.lookup('tcp', 4, LO, p, LO, port);
  await time('lookup, cached 4-tuple', (i) => cached.lookup('tcp', 4, LO, ports[i]!, LO, port));
  console.log(`cold lookups that found the child: ${found} of ${ports.length * 3}`);
  child.kill();
  server.close();
  process.exit(0);
}

void main();
