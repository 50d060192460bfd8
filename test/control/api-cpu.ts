/**
 * Measurement, not a test (run by hand: node dist/test/control/api-cpu.js):
 * sluice's process CPU time for a 1 GiB download through it (nginx in the
 * server namespace, curl in the client), with the API off (api.listen
 * null), on, and on with dashboard-like clients connected (WebSocket
 * /connections every second, /traffic, /memory). Prints one JSON line per run.
 */
import { readFileSync, writeFileSync, mkdirSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Lab } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4 } from '../harness/topology.js';
import { Engine, SLUICE_BIN, TUN, childEnv, steer, waitListening } from '../fixtures/engine/lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const WS_CLIENT = path.resolve(here, '../fixtures/ws-client.js');
const SIZE = 1024 * 1024 * 1024;
const REPS = Number(process.env.REPS ?? 3);

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, clock ticks of 10 ms
}

const noTest = { teardown: (fn: () => unknown) => void teardowns.push(fn), plan: () => {}, comment: (m: string) => console.error(m) };
const teardowns: Array<() => unknown> = [];

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-apicpu-'));
  mkdirSync(path.join(dir, 'www'));
  writeFileSync(path.join(dir, 'www', 'big.bin'), '');
  truncateSync(path.join(dir, 'www', 'big.bin'), SIZE);
  const lab = await Lab.create(noTest as never, 'apicpuxx');
  try {
    const { client, gateway, server } = await threeNamespaces(lab);
    writeFileSync(path.join(dir, 'nginx.conf'), `daemon off;\nmaster_process off;\nerror_log ${dir}/e.log;\npid ${dir}/n.pid;\nevents {}\nhttp { access_log off; sendfile on; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir}; server { listen ${SERVER_V4}:80; root ${dir}/www; } }\n`);
    const nginx = server.spawn(['nginx', '-c', path.join(dir, 'nginx.conf'), '-p', dir]);
    await waitListening(server, 'tcp', 80, nginx, 'nginx');
    // ORDER=on,off,clients reorders the runs (to see an order effect on a busy machine).
    for (const mode of (process.env.ORDER ?? 'off,on,clients').split(',') as Array<'off' | 'on' | 'clients'>) {
      const cfg = path.join(dir, `${mode}.yaml`);
      writeFileSync(cfg, `log: { level: info, format: json }\ntun: { name: ${TUN} }\ndns: { hijack: false, fakeIp: { persistPath: null }, upstreams: [ { address: "udp://${SERVER_V4}:53" } ] }\n${mode === 'off' ? 'api: { listen: null }\n' : ''}`);
      const engine = new Engine(gateway.spawn([process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', path.join(dir, `${mode}.state.json`)], { env: childEnv }));
      await engine.waitFor((l) => l.msg === 'ready', 20_000, 'ready');
      await steer(gateway, TUN);
      const token = mode === 'off' ? '' : readFileSync(path.join(dir, 'api-secret'), 'utf8').trim();
      const clients = mode === 'clients' ? ['connections', 'traffic', 'memory'].map((p) => gateway.spawn([process.execPath, WS_CLIENT, `ws://127.0.0.1:9090/${p}?token=${token}`, '1000000', '600000'], { env: childEnv })) : [];
      for (let i = 0; i < REPS; i++) {
        const before = cpuMs(engine.proc.pid!);
        const t0 = performance.now();
        const r = await client.exec(['curl', '-sS', '-o', '/dev/null', '-w', '%{size_download}', `http://${SERVER_V4}/big.bin`], { timeoutMs: 300_000 });
        const ms = performance.now() - t0;
        console.log(JSON.stringify({ mode, rep: i, bytes: Number(r.stdout), wallMs: Math.round(ms), sluiceCpuMs: cpuMs(engine.proc.pid!) - before, mbitPerS: Math.round((Number(r.stdout) * 8) / ms / 1000) }));
      }
      for (const c of clients) c.kill('SIGTERM');
      await engine.stop();
      await gateway.sh(`ip rule del priority 1000 || true; ip -6 rule del priority 1000 || true`);
    }
  } finally {
    for (const fn of teardowns.reverse()) await fn();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
