/**
 * `npm run demo`: the README's main job on a fresh machine. Builds a
 * throw-away client / gateway / server set of network namespaces (nothing
 * on the host changes), runs `sluice run` with the built-in default policy
 * in the gateway (everything direct, DNS hijacked in fake-ip mode, every
 * flow logged), routes the client's traffic into sluice's TUN, drives curl
 * and dig through it and prints sluice's log. Tears everything down at the
 * end, also on failure or Ctrl-C.
 */
import path from 'node:path';
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

const SERVER_SCRIPT = `require('http').createServer((q, s) => s.end('hello from the server, you asked for ' + q.headers.host + '\\n')).listen(80, '::')`;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  const ctx = new Teardown();
  const stop = (): void => void ctx.run().then(() => process.exit(130));
  process.once('SIGINT', stop);
  try {
    const lab = await Lab.create(ctx as unknown as TestLike, 'demo');
    const { client, gateway, server } = await threeNamespaces(lab);
    server.spawn([process.execPath, '-e', SERVER_SCRIPT]);
    const engine = gateway.spawn([process.execPath, sluice, 'run'], { env: { ...process.env, NODE_OPTIONS: '' } });
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
    await show('ping -c 2 203.0.113.77  (answered by the stack)', 'ping -c 2 -W 2 203.0.113.77 | tail -2');
    engine.kill('SIGTERM');
    await new Promise((r) => engine.once('exit', r));
    console.log("sluice's log (JSON lines; a terminal gets a readable form):");
    for (const l of lines) console.log(`  ${l}`);
  } finally {
    await ctx.run();
    process.off('SIGINT', stop);
  }
  console.log('\nAll namespaces removed.');
}

main().catch((err: Error) => {
  console.error(`demo failed: ${err.message}`);
  process.exitCode = 1;
});
