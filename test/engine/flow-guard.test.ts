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

const agentModule = pathToFileURL(path.resolve(here, '../../src/outbound/agent.js')).href;

/**
 * A long-lived socket keeps the async context it was made in. A pooled one
 * dialled by the first flow that needed it, made through bindShared, reports
 * its later errors as the pool's, and that first flow (still open) is not
 * failed by them; one made without it, in a flow that has since ended, is
 * reported as coming after that flow, never routed to it. dialingAgent (DoH,
 * any HTTP client in sluice) dials its pooled connections in its own scope.
 */
const SHARED_SCRIPT = `
import { FlowGuard, SharedScope, bindShared, flowScope, installErrorBoundary } from ${JSON.stringify(guardModule)};
import { dialingAgent } from ${JSON.stringify(agentModule)};
import net from 'node:net';
import http from 'node:http';
const failed = {}, unattributed = [];
installErrorBoundary({ unattributed: (err, origin, source) => unattributed.push({ origin, message: err.message, ...source }) });
const guard = (name) => new FlowGuard(name, (_g, err) => { failed[name] = err.message; });
const listen = (srv) => new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv.address().port)));
const echo = net.createServer((c) => c.on('data', (d) => c.write(d)));
const web = http.createServer((_req, res) => res.end('ok'));
const echoPort = await listen(echo);
const webPort = await listen(web);
const boomOnData = (s, text) => s.on('data', (d) => { if (String(d) === 'boom') throw new Error(text); });
const dialPooled = bindShared(new SharedScope('echo pool'), () => boomOnData(net.connect(echoPort, '127.0.0.1'), 'pooled socket error'));
let pooled, unbound;
const first = guard('first');
first.run(() => { pooled = dialPooled(); });
const gone = guard('gone');
gone.run(() => { unbound = boomOnData(net.connect(echoPort, '127.0.0.1'), 'unbound socket error'); });
await new Promise((r) => pooled.once('connect', r));
gone.end();
const second = guard('second');
second.run(() => { pooled.write('boom'); unbound.write('boom'); });
const late = guard('late');
late.run(() => setTimeout(() => { throw new Error('after the end'); }, 20));
late.end();
let agentScope = 'not dialled';
const agent = dialingAgent({ name: 'stub', connectTcp: async (t) => { const s = flowScope.getStore(); agentScope = s instanceof SharedScope ? 'shared: ' + s.what : s === undefined ? 'none' : 'flow: ' + s.what; return net.connect(t.port, t.host); } });
let body = null;
guard('doh').run(() => { agent.request({ origin: 'http://127.0.0.1:' + webPort, path: '/', method: 'GET' }).then((r) => r.body.text()).then((b) => { body = b; }); });
// Waits for the outcome itself (a loaded machine may take long), not a fixed time.
for (let i = 0; i < 2000 && (unattributed.length < 3 || body === null); i++) await new Promise((r) => setTimeout(r, 10));
await new Promise((r) => setTimeout(r, 50));
unattributed.sort((a, b) => a.message.localeCompare(b.message));
console.log(JSON.stringify({ failed, unattributed, agentScope, body, firstFailed: first.failed }));
process.exit(0);
`;

t.test('a shared socket first made inside a flow keeps its errors its own', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', SHARED_SCRIPT], { env: { ...process.env, NODE_OPTIONS: '' }, timeout: 30_000 });
  const r = JSON.parse(stdout.trim()) as { failed: Record<string, string>; unattributed: Array<Record<string, string>>; agentScope: string; body: string | null; firstFailed: boolean };
  t.same(r.failed, {}, 'no flow failed: neither the flow that first dialled the pool, nor the one using it, nor the ended ones');
  t.equal(r.firstFailed, false);
  t.same(r.unattributed, [
    { origin: 'uncaughtException', message: 'after the end', afterFlow: 'late' },
    { origin: 'uncaughtException', message: 'pooled socket error', resource: 'echo pool' },
    { origin: 'uncaughtException', message: 'unbound socket error', afterFlow: 'gone' },
  ], 'each reported with where it ran: the pool, or after the flow that had ended');
  t.equal(r.agentScope, 'shared: http agent via stub', "dialingAgent dials in its own scope, not the requesting flow's");
  t.equal(r.body, 'ok', 'and the request went through');
});
