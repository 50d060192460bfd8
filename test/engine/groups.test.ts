/**
 * Outbound groups in `sluice run`, with curl in the client namespace and
 * microsocks in the server namespace:
 *  - fallback [dead, live]: the first member is a SOCKS port nobody listens
 *    on; flows go through the live microsocks, the dead one is marked down
 *    once and not dialled again; then the dead one is started and the live
 *    one killed, and new flows move back to the first member;
 *  - urltest [slow, fast]: `slow` is a microsocks behind a delaying relay of
 *    the test's own (no netem on these kernels); the checks pick `fast`;
 *  - loadbalance [a, dead, b] (consistent-hash): twelve destination hosts
 *    each keep their member, spread over a and b, never the dead one; when
 *    a dies its destinations move to b;
 *  - select: a choice made in the file (default, applied by SIGHUP) is
 *    stored beside the state file and still holds after a restart with the
 *    default removed from the file (the first member otherwise).
 * The flow lines carry the chain (group -> member).
 *
 * Needs root, /dev/net/tun, curl, microsocks.
 */
import t from 'tap';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireRoot, waitForJsonLine, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import {
  BLOB_SERVER, Engine, TUN, childEnv, curl, describe, requireCommands, startMicrosocks, tempDir, createLab, waitListening,
} from '../fixtures/engine/lab.js';
import { apiCall, startWithState } from '../fixtures/engine/restartable.js';

const DELAY_RELAY = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/delay-relay.js');


const header = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { hijack: false, fakeIp: { persistPath: null } }
`;

let port = 45000;
async function get(client: Netns, engine: Engine, what: string): Promise<{ chain: unknown; outbound: string }> {
  const local = port++;
  const r = await curl(client, ['--local-port', String(local), '-o', '/dev/null', '-w', '%{size_download}', `http://${SERVER_V4}:8080/bytes/2000`]);
  if (r.stdout !== '2000') throw new Error(`${what}: curl failed (${describe(r)})`);
  const f = await engine.flowFrom(`${CLIENT_V4}:${local}`);
  if (f === null) throw new Error(`${what}: no flow line`);
  return { chain: f.chain, outbound: f.outbound };
}

t.test('groups in sluice run: fallback, urltest, select, loadbalance', { timeout: 240_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'microsocks'])) return;
  const dir = tempDir(t, 'groups');
  const lab = await createLab(t, 'engrgrps');
  const { client, gateway, server } = await threeNamespaces(lab);
  const blob = server.spawn([process.execPath, BLOB_SERVER, '8080'], { env: childEnv });
  await waitForJsonLine(blob, (m: { event?: string }) => m.event === 'ready');
  const check = `check: { url: "http://${SERVER_V4}:8080/bytes/1", interval: 2, timeout: 3000, lazy: false }`;

  await t.test('fallback: a dead first member, then the live one dies and the first is back', async (t) => {
    const live = await startMicrosocks(t, server, 1081);
    const engine = await startWithState(
      t,
      gateway,
      dir,
      `${header}
outbounds:
  - { name: direct, type: direct }
  - { name: first, type: socks5, server: ${SERVER_V4}, port: 1080 }
  - { name: second, type: socks5, server: ${SERVER_V4}, port: 1081 }
  - { name: fb, type: fallback, outbounds: [first, second], ${check} }
rules:
  - { port: [8080], outbound: fb }
final: direct
`,
    );
    const a = await get(client, engine, 'first request');
    t.same(a, { chain: ['fb', 'second'], outbound: 'fb' }, 'the flow went fb -> second');
    const down = engine.lines.filter((l) => l.msg === 'group member down' && l.member === 'first');
    t.ok(down.length >= 1, 'the dead member was logged down');
    const started = Date.now();
    for (let i = 0; i < 3; i++) t.same((await get(client, engine, `request ${i}`)).chain, ['fb', 'second'], `request ${i} through the live member`);
    t.comment(`3 requests in ${Date.now() - started} ms with the dead member first in the list`);
    const downNow = engine.lines.filter((l) => l.msg === 'group member down' && l.member === 'first').length;
    t.ok(downNow <= down.length + 2, `no flow waited on the dead member (down lines ${down.length} -> ${downNow}, from checks only)`);

    // The first member comes alive, the live one dies.
    const revived = await startMicrosocks(t, server, 1080);
    live.proc.kill('SIGKILL');
    await new Promise((r) => live.proc.once('exit', r));
    const b = await get(client, engine, 'after the switch');
    t.same(b.chain, ['fb', 'first'], 'new flows moved back to the first member');
    for (let i = 0; i < 2; i++) t.same((await get(client, engine, `later ${i}`)).chain, ['fb', 'first']);
    t.ok(revived.proc.exitCode === null, 'the revived proxy carried them');
  });

  await t.test('urltest: the faster of two proxies, one slowed by a delaying relay', async (t) => {
    await startMicrosocks(t, server, 1082);
    await startMicrosocks(t, server, 1084);
    const relay = server.spawn([process.execPath, DELAY_RELAY, SERVER_V4, '1083', SERVER_V4, '1082', '150'], { env: childEnv });
    t.teardown(() => {
      relay.kill('SIGTERM');
    });
    await waitListening(server, 'tcp', 1083, relay, 'delay relay');
    const engine = await startWithState(
      t,
      gateway,
      dir,
      `${header}
outbounds:
  - { name: direct, type: direct }
  - { name: slow, type: socks5, server: ${SERVER_V4}, port: 1083 }
  - { name: fast, type: socks5, server: ${SERVER_V4}, port: 1084 }
  - { name: ut, type: urltest, outbounds: [slow, fast], ${check} }
rules:
  - { port: [8080], outbound: ut }
final: direct
`,
    );
    const sw = await engine.waitFor((l) => l.msg === 'group switched' && l.group === 'ut', 20_000, 'urltest switching');
    t.match(sw, { from: 'slow', to: 'fast' }, 'the checks moved urltest from the first member to the faster one');
    const ups = engine.lines.filter((l) => l.msg === 'group member up');
    t.comment(`switch: ${JSON.stringify(sw)}; ups: ${JSON.stringify(ups)}`);
    for (let i = 0; i < 3; i++) t.same((await get(client, engine, `urltest ${i}`)).chain, ['ut', 'fast'], `request ${i} through the fast proxy`);
  });

  await t.test('select: a choice survives a restart', async (t) => {
    await startMicrosocks(t, server, 1085);
    const yaml = (def: string): string => `${header}
outbounds:
  - { name: direct, type: direct }
  - { name: proxy, type: socks5, server: ${SERVER_V4}, port: 1085 }
  - { name: pick, type: select, outbounds: [direct, proxy]${def} }
rules:
  - { port: [8080], outbound: pick }
final: direct
`;
    let engine = await startWithState(t, gateway, dir, yaml(''));
    t.same((await get(client, engine, 'select first')).chain, ['pick', 'direct'], 'no choice yet: the first member');
    writeFileSync(path.join(dir, 'sluice.yaml'), yaml(', default: proxy'));
    process.kill(engine.proc.pid!, 'SIGHUP');
    await engine.waitFor((l) => l.msg === 'reloaded', 10_000, '"reloaded"');
    t.same((await get(client, engine, 'after choosing')).chain, ['pick', 'proxy'], 'the choice applies to new flows');
    const stored = JSON.parse(readFileSync(path.join(dir, 'groups.json'), 'utf8')) as unknown;
    t.match(stored, { selected: { pick: { selected: 'proxy' } } }, 'stored beside the state file');
    await engine.stop();
    engine = await startWithState(t, gateway, dir, yaml(''));
    t.same((await get(client, engine, 'after restart')).chain, ['pick', 'proxy'], 'after a restart with no default in the file: still the stored choice');
  });

  await t.test('the control API: /proxies lists the groups, PUT chooses, the choice survives a restart, /connections shows the chain', async (t) => {
    await startMicrosocks(t, server, 1086);
    const yaml = `${header}
outbounds:
  - { name: direct, type: direct }
  - { name: proxy, type: socks5, server: ${SERVER_V4}, port: 1086 }
  - { name: sel, type: select, outbounds: [direct, proxy] }
  - { name: fb, type: fallback, outbounds: [sel, direct], ${check} }
rules:
  - { port: [8080], outbound: fb }
final: direct
`;
    rmSync(path.join(dir, 'groups.json'), { force: true });
    let engine = await startWithState(t, gateway, dir, yaml);
    const token = readFileSync(path.join(dir, 'api-secret'), 'utf8').trim();
    const proxies = await apiCall(gateway, 'GET', '/proxies', token);
    t.match(proxies.json, { proxies: { sel: { type: 'Selector', now: 'direct', all: ['direct', 'proxy'] }, fb: { type: 'Fallback', now: 'sel', all: ['sel', 'direct'] }, GLOBAL: { type: 'Selector' } } }, 'GET /proxies shows the groups');
    const put = await apiCall(gateway, 'PUT', '/proxies/sel', token, JSON.stringify({ name: 'proxy' }));
    t.equal(put.status, 204, `PUT /proxies/sel {name: proxy} (${put.text})`);
    const bad = await apiCall(gateway, 'PUT', '/proxies/fb', token, JSON.stringify({ name: 'direct' }));
    t.equal(bad.status, 400, `a fallback group takes no choice (${bad.text})`);
    t.same((await get(client, engine, 'after PUT')).chain, ['fb', 'sel', 'proxy'], 'new flows follow the choice, through both groups');
    const delay = await apiCall(gateway, 'GET', `/proxies/fb/delay?url=${encodeURIComponent(`http://${SERVER_V4}:8080/bytes/1`)}&timeout=5000`, token);
    t.equal(delay.status, 200, `a delay test through the nested groups (${delay.text})`);
    // A group delay test that fails through a member marks it down in the group's health, as a periodic check would.
    const failed = await apiCall(gateway, 'GET', `/group/fb/delay?url=${encodeURIComponent(`http://${SERVER_V4}:9/`)}&timeout=2000`, token);
    t.equal(failed.status, 200, `a group delay test with an unreachable URL answers (${failed.text})`);
    const down = await engine.waitFor((l) => l.msg === 'group member down' && l.group === 'fb', 10_000, '"group member down" after the failed delay test');
    t.match(down, { member: /^(sel|direct)$/ }, `the failed delay test marked a member of fb down (${String(down.member)}: ${String(down.reason)})`);
    await engine.stop();
    engine = await startWithState(t, gateway, dir, yaml);
    const after = await apiCall(gateway, 'GET', '/proxies/sel', token);
    t.match(after.json, { now: 'proxy' }, 'after a restart: the choice made through the API');
    const local = port++;
    const slow = client.exec(['curl', '-sS', '--max-time', '30', '--limit-rate', '200K', '--local-port', String(local), '-o', '/dev/null', `http://${SERVER_V4}:8080/bytes/3000000`], { allowFail: true, timeoutMs: 40_000 });
    let listed: { chains?: string[] } | undefined;
    // The flow is listed from its SYN; its chain once the group's dial is done.
    for (let i = 0; i < 50 && (listed?.chains?.length ?? 0) < 3; i++) {
      await new Promise((r) => setTimeout(r, 200));
      const c = await apiCall(gateway, 'GET', '/connections', token);
      listed = ((c.json as { connections?: Array<{ metadata?: { sourcePort?: string }; chains?: string[] }> })?.connections ?? []).find((x) => String(x.metadata?.sourcePort) === String(local));
    }
    t.same(listed?.chains, ['proxy', 'sel', 'fb'], 'GET /connections lists the flow with its chain (innermost first, as Clash)');
    await apiCall(gateway, 'DELETE', '/connections', token);
    await slow;
  });

  await t.test('loadbalance consistent-hash: a destination keeps its member, destinations spread over the live two, a dead member is skipped', async (t) => {
    const a = await startMicrosocks(t, server, 1090);
    await startMicrosocks(t, server, 1091);
    // Twelve destination hosts: extra addresses of the server (the proxies dial them locally).
    const dests = Array.from({ length: 12 }, (_, i) => `203.0.113.${20 + i}`);
    await server.ipBatch(dests.map((d) => `addr add ${d}/32 dev eth0`));
    const engine = await startWithState(
      t,
      gateway,
      dir,
      `${header}
outbounds:
  - { name: direct, type: direct }
  - { name: a, type: socks5, server: ${SERVER_V4}, port: 1090 }
  - { name: b, type: socks5, server: ${SERVER_V4}, port: 1091 }
  - { name: dead, type: socks5, server: ${SERVER_V4}, port: 1092 }
  - { name: lb, type: loadbalance, outbounds: [a, dead, b], ${check} }
rules:
  - { port: [8080], outbound: lb }
final: direct
`,
    );
    const to = async (dst: string, what: string): Promise<string> => {
      const local = port++;
      const r = await curl(client, ['--local-port', String(local), '-o', '/dev/null', '-w', '%{size_download}', `http://${dst}:8080/bytes/2000`]);
      if (r.stdout !== '2000') throw new Error(`${what}: curl to ${dst} failed (${describe(r)})`);
      const f = await engine.flowFrom(`${CLIENT_V4}:${local}`);
      const chain = f?.chain as string[] | undefined;
      if (chain === undefined || chain.length !== 2 || chain[0] !== 'lb') throw new Error(`${what}: flow line chain ${JSON.stringify(chain)}`);
      return chain[1]!;
    };
    const first = new Map<string, string>();
    for (const d of dests) first.set(d, await to(d, `first to ${d}`));
    const again = new Map<string, string>();
    for (const d of dests) again.set(d, await to(d, `again to ${d}`));
    t.comment(`members by destination: ${dests.map((d) => `${d.split('.')[3]}=${first.get(d)}`).join(' ')}`);
    t.same([...again], [...first], 'every destination went to the same member both times');
    const used = new Set(first.values());
    t.same([...used].sort(), ['a', 'b'], 'the destinations spread over both live members, never the dead one');
    t.ok(engine.lines.some((l) => l.msg === 'group member down' && l.member === 'dead'), 'the dead member was marked down');

    // a dies: only its destinations move (to b); b's stay where they were.
    a.proc.kill('SIGKILL');
    await new Promise((r) => a.proc.once('exit', r));
    for (const d of dests) {
      const now = await to(d, `after a died, to ${d}`);
      if (now !== 'b') t.fail(`${d}: went to ${now} after a died`);
    }
    t.pass('after a died every destination went to b (b\'s own destinations did not move, a\'s moved there), none failed');
  });
});
