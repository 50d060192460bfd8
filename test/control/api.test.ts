/**
 * The control API of `sluice run` (issue 9), end to end in namespaces:
 * sluice in the gateway namespace with the API on its default address
 * (127.0.0.1:9090 there), nginx and dnsmasq in the server namespace, curl
 * and dig in the client namespace, curl and a `ws` WebSocket client
 * (test/fixtures/ws-client.ts) as the API's clients in the gateway.
 *
 *  - without the secret, or with a wrong one, every route is refused (401 JSON), also WebSocket upgrades;
 *  - a live download (paced by nginx's limit_rate) shows in /connections with its metadata
 *    and growing counters, in /v1/flows, on the /traffic and /connections
 *    WebSocket streams (?token=); DELETE /connections/:id ends it at once;
 *  - POST /v1/reload after a rule-set edit routes the next flow by it;
 *  - PATCH /configs mode direct sends a blocked name direct; mode rule restores;
 *  - 400 and 404 answers; /logs; /dns/query; a delay test through an outbound;
 *  - a second sluice whose api.listen is taken fails naming api.listen and leaves no TUN behind.
 *
 * Needs root, /dev/net/tun, curl, dig, nginx, dnsmasq.
 */
import t, { type Test } from 'tap';
import { readFileSync, statSync, writeFileSync, mkdirSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { DIRECT_AND_BLOCK, curlAnswer, fakeIpHead, startWwwNginx, type CurlAnswer } from '../fixtures/engine/three-ns.js';
import { SLUICE_BIN, TUN, childEnv, createLab, curl, describe, requireCommands, startDnsmasq, startEngine, steer, tempDir, type Engine } from '../fixtures/engine/lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const WS_CLIENT = path.resolve(here, '../fixtures/ws-client.js');
const API = 'http://127.0.0.1:9090';
const BIG = 400 * 1024 * 1024;

type Answer = CurlAnswer;

/** One API request with curl inside `ns`; never throws on an HTTP error status. */
async function call(ns: Netns, method: string, route: string, o: { token?: string | null; body?: string; header?: string[] } = {}): Promise<Answer> {
  const args = ['-X', method];
  if (o.token !== null && o.token !== undefined) args.push('-H', `Authorization: Bearer ${o.token}`);
  for (const h of o.header ?? []) args.push('-H', h);
  if (o.body !== undefined) args.push('--data-binary', '@-');
  args.push(`${API}${route}`);
  return curlAnswer(ns, args, o.body);
}

/** Runs the WebSocket client in `ns`; resolves with its event lines. */
async function wsEvents(ns: Netns, url: string, count: number, timeoutMs: number, bearer?: string): Promise<Array<Record<string, any>>> {
  const r = await ns.exec([process.execPath, WS_CLIENT, url, String(count), String(timeoutMs), ...(bearer !== undefined ? [bearer] : [])], { allowFail: true, timeoutMs: timeoutMs + 10_000, env: childEnv });
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, any>);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** nginx in `server` on SERVER_V4:80 and :8080 serving `www`. */
function startNginx(t: Test, server: Netns, dir: string): Promise<void> {
  // The server paces the download (curl reads at once, so the flow never waits on a closed window).
  return startWwwNginx(t, server, dir, `server { listen ${SERVER_V4}:80; listen ${SERVER_V4}:8080; root ${dir}/www; location /big.bin { limit_rate 2m; } }`, { sendfile: true });
}

t.test('control API', { timeout: 300_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'dig', 'nginx', '/usr/sbin/dnsmasq'])) return;
  const dir = tempDir(t, 'api');
  mkdirSync(path.join(dir, 'www'));
  writeFileSync(path.join(dir, 'www', 'small.txt'), 'hello from nginx\n');
  // A sparse file: 400 MiB of zeros that take no disk.
  writeFileSync(path.join(dir, 'www', 'big.bin'), '');
  truncateSync(path.join(dir, 'www', 'big.bin'), BIG);
  const setFile = path.join(dir, 'moved.txt');
  writeFileSync(setFile, '# names to block\nother.example\n');
  const lab = await createLab(t, 'ctrlapii');
  const { client, gateway, server } = await threeNamespaces(lab);
  await startNginx(t, server, dir);
  await startDnsmasq(t, server, { 'dl.example': SERVER_V4, 'moved.example': SERVER_V4 });
  const yaml = `${fakeIpHead()}${DIRECT_AND_BLOCK}ruleSets:
  moved: { type: domain, path: ./moved.txt }
rules:
  - { ruleSet: [moved], outbound: block }
final: direct
http: { enabled: true, ports: [8080] }
`;
  const engine = await startEngine(t, gateway, dir, yaml);
  await steer(gateway, TUN);
  const ready = engine.lines.find((l) => l.msg === 'ready')!;
  const secretFile = path.join(dir, 'api-secret');
  t.match(ready, { api: '127.0.0.1:9090', apiSecretFile: secretFile }, 'the ready line says where the API listens and where its secret is');
  const st = statSync(secretFile);
  t.equal(st.mode & 0o777, 0o600, 'the generated secret file is mode 0600');
  t.equal(st.uid, 0, 'and owned by root');
  const token = readFileSync(secretFile, 'utf8').trim();
  t.match(token, /^[0-9a-f]{64}$/, 'the secret is 32 random bytes in hex');

  /** A fake IP for `name`, from sluice's DNS hijack (dig from the client, answered through the TUN). */
  const fakeIp = async (name: string): Promise<string> => {
    const r = await client.exec(['dig', '+short', '+time=3', '+tries=2', `@${SERVER_V4}`, name, 'A'], { allowFail: true });
    const ip = r.stdout.trim().split('\n').pop() ?? '';
    if (!/^198\.18\./.test(ip)) throw new Error(`no fake IP for ${name}: ${r.stdout} ${r.stderr}`);
    return ip;
  };

  await t.test('requests without the secret, or with a wrong one, are refused', async (t) => {
    for (const route of ['/version', '/connections', '/v1/stats', '/proxies', '/nonexistent']) {
      const none = await call(gateway, 'GET', route, { token: null });
      t.equal(none.status, 401, `GET ${route} without a token: 401`);
      t.same(none.json, { message: 'Unauthorized' }, 'with the Clash error body');
      const wrong = await call(gateway, 'GET', route, { token: token.slice(0, -1) + (token.endsWith('0') ? '1' : '0') });
      t.equal(wrong.status, 401, `GET ${route} with a wrong token: 401`);
    }
    const del = await call(gateway, 'DELETE', '/connections', { token: 'nope' });
    t.equal(del.status, 401, 'DELETE /connections with a wrong token: 401');
    const q = await call(gateway, 'GET', `/version?token=${token}`, { token: null });
    t.equal(q.status, 401, '?token= is for WebSocket upgrades only; a plain GET needs the header');
    const ok = await call(gateway, 'GET', '/version', { token });
    t.equal(ok.status, 200, 'GET /version with the secret: 200');
    t.same(ok.json, { version: JSON.parse(readFileSync(path.join(here, '../../../package.json'), 'utf8')).version.replace(/^/, 'sluice '), meta: true }, 'version shape');
    const pre = await client.exec(['true']); // keeps the namespaces warm; the preflight runs in the gateway
    void pre;
    const preflight = await gateway.exec(['curl', '-sS', '-m', '10', '-i', '-X', 'OPTIONS', '-H', 'Origin: https://metacubex.github.io', '-H', 'Access-Control-Request-Method: GET', '-H', 'Access-Control-Request-Headers: authorization', '-H', 'Access-Control-Request-Private-Network: true', `${API}/traffic`]);
    t.match(preflight.stdout, /^HTTP\/1\.1 204/, 'an OPTIONS preflight is answered 204 without credentials');
    t.match(preflight.stdout, /Access-Control-Allow-Origin: \*/i, 'any origin');
    t.match(preflight.stdout, /Access-Control-Allow-Headers: Authorization, Content-Type/i, 'Authorization and Content-Type allowed');
    t.match(preflight.stdout, /Access-Control-Allow-Private-Network: true/i, 'private network access allowed');
    const wsNone = await wsEvents(gateway, 'ws://127.0.0.1:9090/traffic', 1, 5000);
    t.match(wsNone, [{ event: 'unexpected', status: 401 }], 'a WebSocket upgrade without a token: 401');
    const wsWrong = await wsEvents(gateway, 'ws://127.0.0.1:9090/traffic?token=wrong', 1, 5000);
    t.match(wsWrong, [{ event: 'unexpected', status: 401 }], 'a WebSocket upgrade with a wrong ?token=: 401');
    const wsHeader = await wsEvents(gateway, 'ws://127.0.0.1:9090/memory', 1, 5000, token);
    t.match(wsHeader, [{ event: 'open' }, { event: 'message' }], 'a WebSocket upgrade with the Bearer header works too');
  });

  await t.test('a live download appears in /connections with its metadata and growing counters; DELETE ends it', async (t) => {
    const ip = await fakeIp('dl.example');
    const started = Date.now();
    let curlEnded = 0;
    const download = curl(client, ['--local-port', '44001', '--resolve', `dl.example:80:${ip}`, '-o', '/dev/null', 'http://dl.example/big.bin'], 120).then((r) => {
      curlEnded = Date.now();
      return r;
    });
    const findFlow = async (): Promise<Record<string, any> | null> => {
      for (let i = 0; i < 100; i++) {
        const snap = await call(gateway, 'GET', '/connections', { token });
        const c = (snap.json?.connections ?? []).find((x: any) => x.metadata?.sourcePort === '44001' && x.download > 0);
        if (c !== undefined) return c;
        await sleep(200);
      }
      return null;
    };
    const c1 = await findFlow();
    if (c1 === null) {
      t.fail(`the download never showed in /connections (curl: ${describe(await download)})`);
      return;
    }
    t.match(c1.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a UUID id');
    t.match(
      c1.metadata,
      { network: 'tcp', type: 'Tun', sourceIP: CLIENT_V4, sourcePort: '44001', destinationIP: ip, destinationPort: '80', host: 'dl.example', sniffHost: 'dl.example', dnsMode: 'fake-ip', process: '', processPath: '', uid: 0, inboundName: 'tun' },
      'metadata: network, type, source and destination (ports as strings), host from the fake IP, the sniffed Host, dnsMode',
    );
    t.same(c1.chains, ['direct'], 'chains: the outbound');
    t.equal(c1.rule, 'Match', 'rule: Match (final)');
    t.equal(c1.rulePayload, '', 'rulePayload empty for final');
    t.ok(!Number.isNaN(Date.parse(c1.start)) && Date.parse(c1.start) >= started - 5000, 'start is an ISO time of the flow start');
    t.ok(c1.upload > 0, `upload counts the request (${c1.upload} B)`);
    await sleep(1500);
    const snap2 = await call(gateway, 'GET', '/connections', { token });
    const c2 = (snap2.json.connections as any[]).find((x) => x.id === c1.id);
    t.ok(c2 !== undefined, 'the same id in the next snapshot');
    t.ok(c2.download > c1.download, `download grows while the flow runs (${c1.download} -> ${c2.download})`);
    t.ok(snap2.json.downloadTotal >= c2.download, `downloadTotal includes the live flow (${snap2.json.downloadTotal})`);
    t.comment(`download ${c1.download} -> ${c2.download} B in about 1.5 s`);

    const v1 = await call(gateway, 'GET', `/v1/flows/${c1.id}`, { token });
    t.equal(v1.status, 200, 'GET /v1/flows/:id');
    t.match(v1.json, { id: c1.id, network: 'tcp', inbound: 'tun', srcIp: CLIENT_V4, srcPort: 44001, dstPort: 80, domain: 'dl.example', nameFrom: 'fake-ip', outbound: 'direct', rule: -1, ruleText: 'final', mode: 'rule' }, 'in sluice\'s shape');

    const traffic = await wsEvents(gateway, `ws://127.0.0.1:9090/traffic?token=${token}`, 2, 10_000);
    const frames = traffic.filter((e) => e.event === 'message').map((e) => JSON.parse(e.data));
    t.equal(frames.length, 2, 'WebSocket /traffic with ?token= sends a frame a second');
    t.ok(frames.some((f) => f.down > 100_000), `and the live download shows in it (${JSON.stringify(frames)})`);
    t.ok(frames.every((f) => typeof f.upTotal === 'number' && f.downTotal >= f.down), 'with totals');

    const conns = await wsEvents(gateway, `ws://127.0.0.1:9090/connections?token=${token}&interval=500`, 3, 10_000);
    const snaps = conns.filter((e) => e.event === 'message').map((e) => JSON.parse(e.data));
    t.equal(snaps.length, 3, 'WebSocket /connections streams snapshots at ?interval=');
    const mine = snaps.map((s) => (s.connections as any[]).find((x) => x.id === c1.id)?.download ?? -1);
    t.ok(mine.every((d) => d > 0) && mine[2] > mine[0], `the flow is in each, its download growing (${mine.join(', ')})`);

    t.equal(curlEnded, 0, 'the download is still running');
    const deletedAt = Date.now();
    const del = await call(gateway, 'DELETE', `/connections/${c1.id}`, { token });
    t.equal(del.status, 204, 'DELETE /connections/:id answers 204');
    const r = await download;
    const took = curlEnded - deletedAt;
    t.not(r.code, 0, `curl fails: the flow was ended (${describe(r)})`);
    t.ok(took < 5000, `promptly (${took} ms after the DELETE)`);
    const line = await engine.waitForFlow({ src: `${CLIENT_V4}:44001` });
    t.equal(line.close, 'closed by API', 'the flow line says who ended it');
    const after = await call(gateway, 'GET', '/connections', { token });
    t.notOk((after.json.connections as any[]).some((x) => x.id === c1.id), 'the flow is gone from /connections');
    t.ok(after.json.downloadTotal >= c2.download, 'and its bytes stay in the totals');
    const again = await call(gateway, 'DELETE', `/connections/${c1.id}`, { token });
    t.equal(again.status, 404, 'DELETE of an id no longer open: 404');
    t.match(again.json, { message: /no open connection/ }, 'JSON error');
  });

  await t.test('POST /v1/reload takes effect for the next flow', async (t) => {
    const ip = await fakeIp('moved.example');
    const get = (port: number): Promise<Awaited<ReturnType<typeof curl>>> => curl(client, ['--local-port', String(port), '--resolve', `moved.example:80:${ip}`, '-o', '/dev/null', '-w', '%{http_code}', 'http://moved.example/small.txt'], 10);
    const before = await get(44011);
    t.equal(before.stdout, '200', `before: moved.example is reachable (${describe(before)})`);
    const rulesBefore = await call(gateway, 'GET', '/rules', { token });
    writeFileSync(setFile, '# names to block\nother.example\nmoved.example\n');
    const reload = await call(gateway, 'POST', '/v1/reload', { token });
    t.equal(reload.status, 200, 'POST /v1/reload: 200');
    t.same(reload.json, { ok: true, changes: ['rule sets changed: moved (1 -> 2 entries)'], needRestart: [] }, 'it says what changed');
    const after = await get(44012);
    t.not(after.code, 0, `after: moved.example is refused (${describe(after)})`);
    t.ok(after.ms < 5000, 'fast (rejected, not timed out)');
    const f = await engine.waitForFlow({ src: `${CLIENT_V4}:44012` });
    t.match(f, { outbound: 'block', rule: 0, close: 'rejected' }, 'by rule 0');
    const rules = await call(gateway, 'GET', '/rules', { token });
    t.match(rules.json.rules[0], { index: 0, type: 'RuleSet', payload: 'moved', proxy: 'block' }, '/rules describes the rule the Clash way');
    t.equal(rules.json.rules[0].extra.hitCount, rulesBefore.json.rules[0].extra.hitCount + 1, 'its hit count went up by one');
    t.match(rules.json.rules[1], { type: 'Match', proxy: 'direct' }, 'final is Match');
    t.ok(rules.json.rules[1].extra.hitCount >= 2, `final's hits counted too (${rules.json.rules[1].extra.hitCount})`);
    const providers = await call(gateway, 'GET', '/providers/rules', { token });
    t.match(providers.json.providers.moved, { name: 'moved', type: 'Rule', behavior: 'Domain', vehicleType: 'File', ruleCount: 2 }, 'the rule set as a rule provider');
    writeFileSync(setFile, 'other.example\n');
    const put = await call(gateway, 'PUT', '/providers/rules/moved', { token });
    t.equal(put.status, 204, 'PUT /providers/rules/:name re-reads it');
    const back = await get(44013);
    t.equal(back.stdout, '200', `and moved.example is reachable again (${describe(back)})`);
    writeFileSync(setFile, 'not a domain!!\n');
    const broken = await call(gateway, 'POST', '/v1/reload', { token });
    t.equal(broken.status, 400, 'a broken rule-set file: 400');
    t.match(broken.json, { ok: false, errors: [/./] }, 'with the errors');
    const still = await get(44014);
    t.equal(still.stdout, '200', 'and the running policy stays');
    writeFileSync(setFile, 'moved.example\n');
    t.equal((await call(gateway, 'POST', '/v1/reload', { token })).status, 200, 'reloaded again: moved.example blocked');
  });

  await t.test('PATCH /configs mode direct takes effect; mode rule restores the rules', async (t) => {
    const ip = await fakeIp('moved.example');
    const get = (port: number): Promise<Awaited<ReturnType<typeof curl>>> => curl(client, ['--local-port', String(port), '--resolve', `moved.example:80:${ip}`, '-o', '/dev/null', '-w', '%{http_code}', 'http://moved.example/small.txt'], 10);
    t.not((await get(44021)).code, 0, 'in mode rule moved.example is blocked');
    const patch = await call(gateway, 'PATCH', '/configs', { token, body: '{"mode":"direct"}' });
    t.equal(patch.status, 204, 'PATCH /configs {"mode":"direct"}: 204');
    t.equal((await call(gateway, 'GET', '/configs', { token })).json.mode, 'direct', 'GET /configs says direct');
    const direct = await get(44022);
    t.equal(direct.stdout, '200', `in mode direct the block rule is not consulted (${describe(direct)})`);
    t.match(await engine.waitForFlow({ src: `${CLIENT_V4}:44022` }), { outbound: 'direct', mode: 'direct' }, 'the flow line says the mode decided');
    t.equal((await call(gateway, 'PATCH', '/configs', { token, body: '{"mode":"Rule"}' })).status, 204, 'back to mode rule (case-insensitive)');
    t.not((await get(44023)).code, 0, 'blocked again');
    const bad = await call(gateway, 'PATCH', '/configs', { token, body: '{"mode":"turbo"}' });
    t.equal(bad.status, 400, 'an unknown mode: 400');
    t.match(bad.json, { message: /mode: expected one of rule, global, direct/ }, 'naming the field');
    const global = await call(gateway, 'PUT', '/proxies/GLOBAL', { token, body: '{"name":"direct"}', header: ['Content-Type: text/plain'] });
    t.equal(global.status, 204, 'PUT /proxies/GLOBAL picks its member (any Content-Type)');
    t.equal((await call(gateway, 'PATCH', '/configs', { token, body: '{"mode":"global"}' })).status, 204, 'mode global');
    t.equal((await get(44024)).stdout, '200', 'mode global sends everything to GLOBAL\'s member (direct)');
    t.equal((await call(gateway, 'PATCH', '/configs', { token, body: '{"mode":"rule"}' })).status, 204, 'mode rule again');
  });

  await t.test('bad input gets 400 and unknown ids 404, as JSON', async (t) => {
    const cases: Array<[string, string, string | undefined, number, RegExp]> = [
      ['PATCH', '/configs', '{"mode":', 400, /Body invalid/],
      ['PATCH', '/configs', '[1,2]', 400, /expected a JSON object/],
      ['PATCH', '/configs', '{"mode":7}', 400, /mode: expected/],
      ['PATCH', '/configs', '{"allow-lan":true}', 400, /allow-lan: sluice cannot change this while running/],
      ['PUT', '/proxies/GLOBAL', '{"name":"nope"}', 400, /no outbound named "nope"/],
      ['PUT', '/proxies/GLOBAL', '{"name":5}', 400, /expected \{"name"/],
      ['PUT', '/proxies/direct', '{"name":"block"}', 400, /Must be a Selector/],
      ['PUT', '/proxies/nope', '{"name":"direct"}', 404, /no proxy or group named nope/],
      ['GET', '/proxies/nope', undefined, 404, /no proxy or group/],
      ['GET', '/group/direct', undefined, 404, /no group named direct/],
      ['GET', '/v1/flows/00000000-0000-0000-0000-000000000000', undefined, 404, /no open flow/],
      ['DELETE', '/v1/flows/whatever', undefined, 404, /no open flow/],
      ['DELETE', '/connections/whatever', undefined, 404, /no open connection/],
      ['GET', '/providers/rules/nope', undefined, 404, /no rule set named nope/],
      ['PUT', '/providers/rules/nope', undefined, 404, /no rule set named nope/],
      ['GET', '/proxies/direct/delay', undefined, 400, /url is required/],
      ['GET', '/proxies/direct/delay?url=ftp://x/&timeout=100', undefined, 400, /expected http/],
      ['GET', '/proxies/direct/delay?url=http://dl.example/&timeout=abc', undefined, 400, /timeout: expected a whole number/],
      ['GET', '/logs?level=loud', undefined, 400, /unknown log level/],
      ['GET', '/dns/query?name=', undefined, 400, /expected a domain name/],
      ['GET', '/dns/query?name=dl.example&type=BOGUS', undefined, 400, /record type/],
      ['PUT', '/v1/mode', '{"mode":"fast"}', 400, /mode: expected/],
      ['GET', '/no/such/route', undefined, 404, /Resource not found/],
      ['POST', '/version', undefined, 405, /not allowed/],
      ['POST', '/restart', undefined, 501, /not supported by sluice/],
      ['POST', '/upgrade', undefined, 501, /not supported by sluice/],
    ];
    for (const [method, route, body, status, message] of cases) {
      const r = await call(gateway, method, route, { token, ...(body !== undefined ? { body } : {}) });
      t.equal(r.status, status, `${method} ${route}${body !== undefined ? ` ${body}` : ''}: ${status}`);
      t.match(r.json, { message }, `  ${r.text.slice(0, 160)}`);
    }
    const wsBad = await wsEvents(gateway, `ws://127.0.0.1:9090/logs?level=loud&token=${token}`, 1, 5000);
    t.match(wsBad, [{ event: 'unexpected', status: 400 }], 'WebSocket /logs?level=loud: 400 before the upgrade');
    const wsInterval = await wsEvents(gateway, `ws://127.0.0.1:9090/connections?interval=0&token=${token}`, 1, 5000);
    t.match(wsInterval, [{ event: 'unexpected', status: 400 }], 'WebSocket /connections?interval=0: 400');
  });

  await t.test('/logs streams flow lines; /dns/query; a delay test through an outbound; /v1/stats', async (t) => {
    const ip = await fakeIp('dl.example');
    // The client stays connected; the request is made once it has subscribed (no backlog is sent).
    const proc = gateway.spawn([process.execPath, WS_CLIENT, `ws://127.0.0.1:9090/logs?level=info&token=${token}`, '1000', '20000'], { env: childEnv });
    const events: Array<Record<string, any>> = [];
    let buffered = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim() !== '') events.push(JSON.parse(line) as Record<string, any>);
      }
    });
    const until = async (pred: () => boolean, ms: number): Promise<boolean> => {
      for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (pred()) return true;
      return pred();
    };
    t.ok(await until(() => events.some((e) => e.event === 'open'), 15_000), 'WebSocket /logs?level=info is open');
    const r = await curl(client, ['--local-port', '44031', '--resolve', `dl.example:80:${ip}`, '-o', '/dev/null', 'http://dl.example/small.txt'], 10);
    t.equal(r.code, 0, 'a short request');
    const mineLine = (): Record<string, any> | undefined =>
      events.filter((e) => e.event === 'message').map((e) => JSON.parse(e.data)).find((e) => typeof e.payload === 'string' && e.payload.includes(`${CLIENT_V4}:44031`));
    await until(() => mineLine() !== undefined, 10_000);
    proc.kill('SIGTERM');
    const flow = mineLine();
    t.ok(flow !== undefined, 'its flow line came over WebSocket /logs');
    if (flow) {
      t.equal(flow.type, 'info', 'as type info');
      t.match(flow.payload, `[TCP] ${CLIENT_V4}:44031 --> dl.example:80 match Match using direct`, 'in the mihomo style');
    }
    const q = await call(gateway, 'GET', '/dns/query?name=dl.example&type=A', { token });
    t.equal(q.status, 200, 'GET /dns/query');
    t.match(q.json, { Status: 0, Question: [{ name: 'dl.example.', qtype: 1 }], Answer: [{ type: 1, data: SERVER_V4 }] }, 'the upstream\'s real answer');
    const d = await call(gateway, 'GET', `/proxies/direct/delay?url=${encodeURIComponent(`http://${SERVER_V4}/small.txt`)}&timeout=5000`, { token });
    t.equal(d.status, 200, `a delay test through direct (${d.text})`);
    t.ok(typeof d.json?.delay === 'number' && d.json.delay > 0, `a real GET, timed (${d.json?.delay} ms)`);
    const p = await call(gateway, 'GET', '/proxies/direct', { token });
    t.equal(p.json.history.length, 1, 'recorded in the proxy\'s history');
    const blocked = await call(gateway, 'GET', `/proxies/block/delay?url=${encodeURIComponent(`http://${SERVER_V4}/small.txt`)}&timeout=2000`, { token });
    t.equal(blocked.status, 503, 'through a reject outbound the test fails: 503');
    const g = await call(gateway, 'GET', `/group/GLOBAL/delay?url=${encodeURIComponent(`http://${SERVER_V4}/small.txt`)}&timeout=3000`, { token });
    t.ok(g.status === 200 && typeof g.json.direct === 'number' && !('block' in g.json), `/group/GLOBAL/delay tests each member (${g.text})`);
    const stats = await call(gateway, 'GET', '/v1/stats', { token });
    t.equal(stats.status, 200, 'GET /v1/stats');
    t.ok(stats.json.stack.rxPackets > 0 && typeof stats.json.stack.drops.bad_checksum === 'number', 'stack counters with every drop reason');
    t.ok(stats.json.tun.rxPackets > 0 && stats.json.tun.txPackets > 0, 'TUN rx/tx');
    t.ok(typeof stats.json.stack.tcpRetransmits === 'number' && typeof stats.json.stack.tcpZeroWindowsSent === 'number' && typeof stats.json.engine.synFlood.pendingSyns === 'number', 'retransmits, zero windows, pending SYNs');
    t.ok(stats.json.flows.byOutbound.direct.flows >= 3 && stats.json.flows.byOutbound.direct.down > 1_000_000, 'per-outbound totals of closed flows');
    const flush = await call(gateway, 'POST', '/cache/fakeip/flush', { token });
    t.equal(flush.status, 204, 'POST /cache/fakeip/flush');
    const stale = await curl(client, ['--local-port', '44032', '--resolve', `dl.example:80:${ip}`, '-o', '/dev/null', 'http://dl.example/small.txt'], 10);
    t.not(stale.code, 0, 'the flushed fake IP is unknown now (refused)');
  });

  await t.test('HTTP L7 and UDP flows are in the table too, with live counters, and DELETE ends them', async (t) => {
    const ip = await fakeIp('dl.example');
    let curlEnded = 0;
    const download = curl(client, ['--local-port', '44041', '--resolve', `dl.example:8080:${ip}`, '-o', '/dev/null', 'http://dl.example:8080/big.bin'], 120).then((r) => {
      curlEnded = Date.now();
      return r;
    });
    let first: any = null;
    for (let i = 0; i < 100 && first === null; i++) {
      const snap = await call(gateway, 'GET', '/connections', { token });
      first = (snap.json?.connections ?? []).find((x: any) => x.metadata?.sourcePort === '44041' && x.download > 0) ?? null;
      if (first === null) await sleep(200);
    }
    if (first === null) {
      t.fail(`the HTTP-mode download never showed (curl: ${describe(await download)})`);
      return;
    }
    t.match(first.metadata, { network: 'tcp', destinationPort: '8080', host: 'dl.example', sniffHost: 'dl.example' }, 'an HTTP-mode (L7) flow');
    await sleep(1500);
    const again = ((await call(gateway, 'GET', '/connections', { token })).json.connections as any[]).find((x) => x.id === first.id);
    t.ok(again !== undefined && again.download > first.download, `its download grows during one response (${first.download} -> ${again?.download})`);
    const deletedAt = Date.now();
    t.equal((await call(gateway, 'DELETE', `/connections/${first.id}`, { token })).status, 204, 'DELETE');
    const r = await download;
    t.not(r.code, 0, 'the L7 download is cut');
    t.ok(curlEnded - deletedAt < 5000, `promptly (${curlEnded - deletedAt} ms)`);

    // A UDP session (not DNS) to a port nothing listens on: sluice holds it until it idles out.
    await client.exec(['bash', '-c', `echo hello > /dev/udp/${SERVER_V4}/9999`]);
    let udp: any = null;
    for (let i = 0; i < 50 && udp === null; i++) {
      const snap = await call(gateway, 'GET', '/connections', { token });
      udp = (snap.json?.connections ?? []).find((x: any) => x.metadata?.network === 'udp' && x.metadata?.destinationPort === '9999') ?? null;
      if (udp === null) await sleep(200);
    }
    t.ok(udp !== null, 'the UDP session is in /connections');
    if (udp !== null) {
      t.match(udp, { upload: 6, metadata: { type: 'Tun', sourceIP: CLIENT_V4, destinationIP: SERVER_V4 }, chains: ['direct'] }, 'with its bytes and ends');
      t.equal((await call(gateway, 'DELETE', `/connections/${udp.id}`, { token })).status, 204, 'DELETE ends it');
      const gone = ((await call(gateway, 'GET', '/connections', { token })).json.connections as any[]).some((x) => x.id === udp.id);
      t.notOk(gone, 'at once');
    }
  });

  await t.test('an api.listen that is taken fails start-up naming api.listen, leaving nothing started', async (t) => {
    const cfg = path.join(dir, 'second.yaml');
    writeFileSync(cfg, yaml.replace(`name: ${TUN}`, 'name: sl9'));
    const r = await gateway.exec([process.execPath, SLUICE_BIN, 'run', '--config', cfg, '--state', path.join(dir, 'second.state.json')], { allowFail: true, timeoutMs: 30_000, env: childEnv });
    t.equal(r.code, 1, 'exit 1');
    t.match(r.stderr, /api\.listen: cannot listen on 127\.0\.0\.1:9090: EADDRINUSE/, `stderr names api.listen (${r.stderr.trim()})`);
    const link = await gateway.exec(['ip', 'link', 'show', 'sl9'], { allowFail: true });
    t.not(link.code, 0, 'no TUN was opened');
    t.ok(engine.running, 'the first sluice is unaffected');
    t.equal((await call(gateway, 'GET', '/version', { token })).status, 200, 'and its API still answers');
  });

  await t.test('the API stops with sluice', async (t) => {
    const stopped = await (engine as Engine).stop();
    t.equal(stopped.code, 0, 'sluice stops cleanly with API clients done');
    const r = await call(gateway, 'GET', '/version', { token });
    t.not(r.status, 200, 'nothing listens on 127.0.0.1:9090 any more');
  });
});
