/**
 * `npm run demo`: the README's main job on a fresh machine. Builds a
 * throw-away client / gateway / server set of network namespaces (nothing
 * on the host changes), runs `sluice run` with the built-in default policy
 * in the gateway (everything direct, DNS hijacked in fake-ip mode, every
 * flow logged), routes the client's traffic into sluice's TUN, drives curl
 * and dig through it and prints sluice's log. Tears everything down at the
 * end, also on failure or Ctrl-C.
 *
 * sluice's files (the fake-IP table, the state file) go to a temporary
 * directory removed at the end: the config is the built-in default with
 * only dns.fakeIp.persistPath moved there. At the end the demo checks that
 * nothing named sluice appeared under /var/lib or /run.
 */
import path from 'node:path';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Lab, waitForJsonLine, type TestLike } from './harness/netns.js';
import { threeNamespaces, steerIntoTun, SERVER_V4, SERVER_V6 } from './harness/topology.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const sluice = path.resolve(here, '../../bin/sluice.js');

class Teardown {
  readonly hooks: (() => unknown)[] = [];
  teardown(fn: () => unknown): void {
    this.hooks.push(fn);
  }
  plan(): void {}
  comment(): void {}
  async run(): Promise<void> {
    for (const fn of this.hooks.reverse()) await fn();
  }
}

/** Paths named like sluice under /var/lib and /run (three levels down), and the namespaces in /run/netns. */
function hostFootprint(): Set<string> {
  const found = new Set<string>();
  const walk = (dir: string, depth: number): void => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e);
      if (/sluice/i.test(e) || dir === '/run/netns') found.add(p);
      if (depth > 1) walk(p, depth - 1);
    }
  };
  walk('/var/lib', 3);
  walk('/run', 3);
  return found;
}

const SERVER_SCRIPT = `require('http').createServer((q, s) => s.end('hello from the server, you asked for ' + q.headers.host + '\\n')).listen(80, '::')`;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  const ctx = new Teardown();
  const before = hostFootprint();
  const work = mkdtempSync(path.join(tmpdir(), 'sluice-demo-'));
  ctx.teardown(() => rmSync(work, { recursive: true, force: true }));
  // The built-in default policy, with sluice's only file in the temporary directory.
  const config = path.join(work, 'sluice.yaml');
  writeFileSync(config, `dns:\n  fakeIp: { persistPath: ${JSON.stringify(path.join(work, 'fakeip.json'))} }\n`);
  const stop = (): void => void ctx.run().then(() => process.exit(130));
  process.once('SIGINT', stop);
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'demo');
    const { client, gateway, server } = await threeNamespaces(lab);
    server.spawn([process.execPath, '-e', SERVER_SCRIPT]);
    const engine = gateway.spawn([process.execPath, sluice, 'run', '--config', config, '--state', path.join(work, 'state.json')], { env: { ...process.env, NODE_OPTIONS: '' } });
    const lines: string[] = [];
    engine.stdout!.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
    await waitForJsonLine(engine, (m: { msg?: string }) => m.msg === 'ready', 20_000);
    console.log('sluice is running in the gateway namespace with the built-in default policy.');
    console.log('The gateway routes everything from the client into its TUN (sluice0).\n');
    await steerIntoTun(gateway, 'sluice0');
    await new Promise((r) => setTimeout(r, 300));
    const show = async (label: string, cmd: string): Promise<void> => {
      const r = await client.exec(['sh', '-c', cmd], { allowFail: true, timeoutMs: 20_000 });
      console.log(`$ ${label}\n${(r.stdout + r.stderr).trim() || `(exit ${r.code})`}\n`);
    };
    await show(`curl http://${SERVER_V4}/`, `curl -sS --max-time 10 http://${SERVER_V4}/`);
    await show(`curl http://[${SERVER_V6}]/`, `curl -sS --max-time 10 'http://[${SERVER_V6}]/'`);
    await show('dig @198.51.100.53 example.com A  (hijacked: a fake-ip answer)', 'dig +short +time=3 +tries=1 @198.51.100.53 example.com A');
    await show(`ping -c 2 ${SERVER_V4}  (forwarded: the server answers)`, `ping -c 2 -W 2 ${SERVER_V4} | tail -2`);
    await show('ping -c 2 203.0.113.77  (nobody has it: no reply is faked)', 'ping -c 2 -W 2 203.0.113.77 | tail -2');
    engine.kill('SIGTERM');
    await new Promise((r) => engine.once('exit', r));
    console.log("sluice's log (JSON lines; a terminal gets a readable form):");
    for (const l of lines) console.log(`  ${l}`);
  } finally {
    await ctx.run();
    process.off('SIGINT', stop);
  }
  const left = [...hostFootprint()].filter((p) => !before.has(p));
  if (left.length > 0) throw new Error(`the demo left files on the host: ${left.join(', ')}`);
  console.log('\nAll namespaces removed; nothing was written under /var/lib or /run.');
}

main().catch((err: Error) => {
  console.error(`demo failed: ${err.message}`);
  process.exitCode = 1;
});
