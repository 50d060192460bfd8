/**
 * The last line of defence (src/engine/flow-guard.ts): an error thrown in
 * one flow's handling, synchronously or later (a timer, a promise
 * continuation, an async function, a socket callback, an 'error' event
 * nobody listens to), ends that flow (its closers run, onFail sees the
 * error) and no other; the process keeps running. An error outside every
 * flow goes to the unattributed hook. Run in a child process: the
 * process-wide handlers are what is tested, and tap has its own.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const guardModule = pathToFileURL(path.resolve(here, '../../src/engine/flow-guard.js')).href;

const SCRIPT = `
import { FlowGuard, installErrorBoundary } from ${JSON.stringify(guardModule)};
import dgram from 'node:dgram';
import net from 'node:net';
import { EventEmitter } from 'node:events';
const failed = {}, closed = {}, unattributed = [];
installErrorBoundary({ unattributed: (err, origin) => unattributed.push(origin + ': ' + err.message) });
const guard = (name) => {
  const g = new FlowGuard(name, (_g, err) => { failed[name] = err.message; });
  g.own(() => { closed[name] = true; });
  return g;
};
guard('sync').run(() => { throw new Error('sync throw'); });
guard('timer').run(() => setTimeout(() => { throw new Error('timer throw'); }, 5));
guard('promise').run(() => { Promise.resolve().then(() => { throw new Error('then throw'); }); });
guard('async').run(() => { (async () => { await new Promise((r) => setTimeout(r, 5)); throw new Error('async throw'); })(); });
guard('dgram').run(() => { const s = dgram.createSocket('udp4'); s.bind(0, () => { s.close(); s.send('x', 0, '127.0.0.1'); }); });
guard('emitter').run(() => { const e = new EventEmitter(); setTimeout(() => e.emit('error', new Error('unheard error event')), 5); });
guard('socket').run(() => {
  const srv = net.createServer((c) => c.end('hi')).listen(0, '127.0.0.1', () => {
    const c = net.connect(srv.address().port, '127.0.0.1');
    c.on('data', () => { srv.close(); c.destroy(); throw new Error('socket data throw'); });
  });
});
const healthy = guard('healthy');
let ticks = 0;
healthy.run(() => { const iv = setInterval(() => { if (++ticks === 20) clearInterval(iv); }, 10); });
setTimeout(() => { throw new Error('outside any flow'); }, 5);
setTimeout(() => {
  console.log(JSON.stringify({ failed, closed, unattributed, ticks, healthyFailed: healthy.failed }));
}, 600);
`;

t.test('errors in one flow end that flow only; the process lives', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', SCRIPT], { env: { ...process.env, NODE_OPTIONS: '' }, timeout: 20_000 });
  const r = JSON.parse(stdout.trim()) as { failed: Record<string, string>; closed: Record<string, boolean>; unattributed: string[]; ticks: number; healthyFailed: boolean };
  t.same(r.failed, {
    sync: 'sync throw',
    timer: 'timer throw',
    promise: 'then throw',
    async: 'async throw',
    dgram: r.failed.dgram,
    emitter: 'unheard error event',
    socket: 'socket data throw',
  }, 'every failing flow saw its own error');
  t.match(r.failed.dgram, /port|ERR_SOCKET_BAD_PORT/i, `dgram send to port 0 inside a flow's callback ended that flow (${r.failed.dgram})`);
  for (const name of ['sync', 'timer', 'promise', 'async', 'dgram', 'emitter', 'socket']) t.equal(r.closed[name], true, `${name}: its closers ran`);
  t.notOk(r.closed.healthy, 'the healthy flow was not closed');
  t.equal(r.healthyFailed, false, 'nor failed');
  t.equal(r.ticks, 20, 'and kept running to the end');
  t.same(r.unattributed, ['uncaughtException: outside any flow'], 'an error outside every flow went to the unattributed hook, and the process went on');
});
