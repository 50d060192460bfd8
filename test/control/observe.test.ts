/**
 * Observability of a running sluice (issue 9), end to end in namespaces:
 * sluice in the gateway with the API on 127.0.0.1:9090 and metrics.listen
 * on 127.0.0.1:9091, nginx and dnsmasq in the server namespace, curl and
 * dig as real clients.
 *
 *  - /metrics needs the API secret, metrics.listen does not; both parse as
 *    strict Prometheus text (test/control/prom-text.ts), and the counters
 *    move with real curl flows and dig queries through sluice;
 *  - `sluice explain ID` and GET /v1/flows/:id/explain explain a live
 *    download: the deciding rule, each earlier rule's failed condition and
 *    the name's origin (the fake-IP mapping), the same text both ways;
 *  - `sluice capture --pcap FILE --filter 80 --count N` writes a pcap that
 *    tcpdump reads back: exactly N packets, all with port 80; without
 *    --pcap it prints one line per packet.
 *
 * Needs root, /dev/net/tun, curl, dig, nginx, dnsmasq, tcpdump.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { SLUICE_BIN, TUN, childEnv, collectOutput, createLab, curl, describe, requireCommands, startDnsmasq, startEngine, steer, tempDir, waitListening } from '../fixtures/engine/lab.js';
import { parsePrometheusText, sampleSum, type Family } from './prom-text.js';

const execFileP = promisify(execFile);
const API = 'http://127.0.0.1:9090';
const METRICS = 'http://127.0.0.1:9091';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function get(ns: Netns, url: string, token: string | null): Promise<{ status: number; text: string }> {
  const args = ['curl', '-sS', '-m', '15', '-o', '-', '-w', '\n%{http_code}'];
  if (token !== null) args.push('-H', `Authorization: Bearer ${token}`);
  args.push(url);
  const r = await ns.exec(args, { allowFail: true, timeoutMs: 25_000 });
  const nl = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(nl + 1)), text: r.stdout.slice(0, nl) };
}

async function startNginx(t: Test, server: Netns, dir: string): Promise<void> {
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
master_process off;
error_log ${dir}/nginx-error.log;
pid ${dir}/nginx.pid;
events { worker_connections 128; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-tmp;
  proxy_temp_path ${dir}/nginx-tmp;
  fastcgi_temp_path ${dir}/nginx-tmp;
  uwsgi_temp_path ${dir}/nginx-tmp;
  scgi_temp_path ${dir}/nginx-tmp;
  server { listen ${SERVER_V4}:80; root ${dir}/www; }
}
`,
  );
  mkdirSync(path.join(dir, 'nginx-tmp'), { recursive: true });
  const proc = server.spawn(['nginx', '-c', conf, '-p', dir]);
  const out = collectOutput(proc);
  t.teardown(() => {
    if (!t.passing()) t.comment(`nginx output:\n${out()}`);
  });
  await waitListening(server, 'tcp', 80, proc, 'nginx');
}

async function tcpdump(file: string, ...expr: string[]): Promise<string[]> {
  const { stdout } = await execFileP('tcpdump', ['-nn', '-r', file, ...expr], { env: { ...process.env, NODE_OPTIONS: '' } });
  return stdout.trim() === '' ? [] : stdout.trim().split('\n');
}

t.test('metrics, explain and capture of a running sluice', { timeout: 300_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'dig', 'nginx', '/usr/sbin/dnsmasq', 'tcpdump'])) return;
  const dir = tempDir(t, 'observe');
  mkdirSync(path.join(dir, 'www'));
  const small = 'x'.repeat(3000) + '\n';
  writeFileSync(path.join(dir, 'www', 'small.txt'), small);
  writeFileSync(path.join(dir, 'www', 'big.bin'), '');
  truncateSync(path.join(dir, 'www', 'big.bin'), 200 * 1024 * 1024);
  const lab = await createLab(t, 'observes');
  const { client, gateway, server } = await threeNamespaces(lab);
  await startNginx(t, server, dir);
  await startDnsmasq(t, server, { 'dl.example': SERVER_V4, 'blocked.example': SERVER_V4 });
  const engine = await startEngine(
    t,
    gateway,
    dir,
    `
log: { level: info, format: json }
tun: { name: ${TUN} }
sniff: { timeoutMs: 1000 }
dns:
  mode: fake-ip
  fakeIp: { persistPath: null }
  upstreams: [ { address: "udp://${SERVER_V4}:53" } ]
metrics: { listen: "127.0.0.1:9091" }
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
rules:
  - { domainSuffix: [blocked.example], outbound: block }
  - { port: [8443], outbound: block }
  - { domain: [dl.example], network: tcp, outbound: direct }
final: direct
`,
  );
  await steer(gateway, TUN);
  const secretFile = path.join(dir, 'api-secret');
  t.equal(engine.lines.find((l) => l.msg === 'ready')?.metrics, '127.0.0.1:9091', 'the ready line says where metrics.listen is');
  const token = readFileSync(secretFile, 'utf8').trim();
  const fakeIp = async (name: string): Promise<string> => {
    const r = await client.exec(['dig', '+short', '+time=3', '+tries=2', `@${SERVER_V4}`, name, 'A'], { allowFail: true });
    const ip = r.stdout.trim().split('\n').pop() ?? '';
    if (!/^198\.18\./.test(ip)) throw new Error(`no fake IP for ${name}: ${r.stdout} ${r.stderr}`);
    return ip;
  };
  const sluiceCli = (...args: string[]) => gateway.exec([process.execPath, SLUICE_BIN, ...args, '--secret-file', secretFile], { allowFail: true, env: childEnv, timeoutMs: 60_000 });
  const scrape = async (): Promise<Map<string, Family>> => {
    const r = await get(gateway, `${API}/metrics`, token);
    if (r.status !== 200) throw new Error(`GET /metrics: ${r.status} ${r.text.slice(0, 200)}`);
    return parsePrometheusText(r.text + '\n');
  };

  await t.test('/metrics: behind the API secret, alone on metrics.listen, strict Prometheus text, counters move', async (t) => {
    const none = await get(gateway, `${API}/metrics`, null);
    t.equal(none.status, 401, 'GET /metrics on the API without the secret: 401');
    const own = await get(gateway, `${METRICS}/metrics`, null);
    t.equal(own.status, 200, 'metrics.listen serves /metrics without a secret');
    t.doesNotThrow(() => parsePrometheusText(own.text + '\n'), 'metrics.listen output parses');
    t.equal((await get(gateway, `${METRICS}/connections`, null)).status, 404, 'and nothing else');

    const before = await scrape();
    for (const n of ['sluice_flows_total', 'sluice_flows_active', 'sluice_flow_bytes_total', 'sluice_flow_duration_seconds', 'sluice_outbound_connect_duration_seconds', 'sluice_rule_matches_total', 'sluice_sniff_total', 'sluice_dns_queries_total', 'sluice_dns_upstream_duration_seconds', 'sluice_fakeip_pool_used', 'sluice_tun_receive_packets_total', 'sluice_tun_transmit_bytes_total', 'sluice_stack_drops_total', 'sluice_tcp_retransmits_total', 'sluice_config_reloads_total', 'nodejs_eventloop_lag_seconds', 'process_cpu_seconds_total']) {
      t.ok(before.has(n), `${n} present`);
    }
    const ip = await fakeIp('dl.example');
    const blockedIp = await fakeIp('blocked.example');
    for (let i = 0; i < 3; i++) {
      const r = await curl(client, ['--local-port', String(45001 + i), '--resolve', `dl.example:80:${ip}`, 'http://dl.example/small.txt']);
      t.equal(r.code, 0, `curl ${i} through sluice (${describe(r)})`);
      t.equal(r.stdout, small, 'the body arrived');
    }
    const rej = await curl(client, ['--local-port', '45010', '--resolve', `blocked.example:80:${blockedIp}`, 'http://blocked.example/small.txt'], 5);
    t.not(rej.code, 0, 'the blocked name is refused');
    for (let i = 0; i < 3; i++) await engine.waitForFlow({ src: `${CLIENT_V4}:${45001 + i}` });
    await engine.waitForFlow({ src: `${CLIENT_V4}:45010` });
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}): number => sampleSum(after, name, labels) - sampleSum(before, name, labels);
    t.comment(`deltas: flows ok ${delta('sluice_flows_total', { outbound: 'direct', result: 'ok' })}, rejected ${delta('sluice_flows_total', { result: 'rejected' })}, bytes down ${delta('sluice_flow_bytes_total', { direction: 'down', outbound: 'direct' })}, tun rx ${delta('sluice_tun_receive_packets_total')}, dns ${delta('sluice_dns_queries_total')}`);
    t.equal(delta('sluice_flows_total', { network: 'tcp', inbound: 'tun', outbound: 'direct', result: 'ok' }), 3, 'three direct flows ended ok');
    t.equal(delta('sluice_flows_total', { outbound: 'block', result: 'rejected' }), 1, 'one rejected');
    t.equal(delta('sluice_rule_matches_total', { rule: '2' }), 3, 'rule 2 matched the three downloads');
    t.equal(delta('sluice_rule_matches_total', { rule: '0' }), 1, 'rule 0 the blocked name');
    t.ok(delta('sluice_flow_bytes_total', { direction: 'down', network: 'tcp', outbound: 'direct' }) >= 3 * small.length, 'bytes down counted');
    t.ok(delta('sluice_flow_bytes_total', { direction: 'up', outbound: 'direct' }) > 0, 'bytes up counted');
    t.equal(delta('sluice_outbound_connect_duration_seconds_count', { outbound: 'direct' }), 3, 'one connect time per dial');
    t.equal(delta('sluice_flow_duration_seconds_count'), 4, 'one duration per ended flow');
    t.ok(delta('sluice_tun_receive_packets_total') >= 4 * 3, 'TUN receive packets moved');
    t.ok(delta('sluice_tun_transmit_bytes_total') >= 3 * small.length, 'TUN transmit bytes moved');
    t.ok(delta('sluice_dns_queries_total', { mode: 'fake-ip', qtype: 'A', result: 'fakeip' }) >= 2, 'the two digs were answered with fake IPs');
    t.ok(sampleSum(after, 'sluice_fakeip_pool_used', { family: 'ipv4' }) >= 2, 'two fake IPs in use');
  });

  await t.test('a live download: sluice explain ID and /v1/flows/:id/explain, flows_active, and the bytes live', async (t) => {
    const ip = await fakeIp('dl.example');
    const download = curl(client, ['--limit-rate', '1M', '--local-port', '45100', '--resolve', `dl.example:80:${ip}`, '-o', '/dev/null', 'http://dl.example/big.bin'], 120);
    let id: string | null = null;
    for (let i = 0; i < 100 && id === null; i++) {
      const r = await get(gateway, `${API}/v1/flows`, token);
      const f = (JSON.parse(r.text).flows as Array<{ id: string; srcPort: number; bytesDown: number }>).find((x) => x.srcPort === 45100 && x.bytesDown > 0);
      if (f !== undefined) id = f.id;
      else await sleep(200);
    }
    if (id === null) return t.fail(`the download never showed in /v1/flows (${describe(await download)})`);
    const cli = await sluiceCli('explain', id);
    t.equal(cli.code, 0, `sluice explain ID exits 0 (${cli.stderr})`);
    t.comment(cli.stdout);
    t.match(cli.stdout, `flow ${id}\n`);
    t.match(cli.stdout, `flow: tcp tun ${CLIENT_V4}:45100 -> ${ip}:80`);
    t.match(cli.stdout, 'name: dl.example (the fake-IP mapping of the destination address)\n');
    // The name was known, so the route was chosen before the first bytes; HTTP was sniffed after (as /connections shows it).
    t.match(cli.stdout, 'protocol: none when routed (http sniffed after the route was chosen, for the log and /connections only)\n');
    const conn = JSON.parse((await get(gateway, `${API}/connections`, token)).text) as { connections: Array<{ id: string; metadata: { host: string; sniffHost: string; type: string } }> };
    const shown = conn.connections.find((c) => c.id === id);
    t.comment(`/connections metadata: ${JSON.stringify(shown?.metadata)}`);
    t.equal(shown?.metadata.host, 'dl.example', '/connections shows the same name');
    t.match(cli.stdout, 'rule 0 domainSuffix [blocked.example]: name dl.example does not match\n');
    t.match(cli.stdout, 'rule 1 port [8443]: port 80 not in the list\n');
    t.match(cli.stdout, 'decided by: rule 2 domain [dl.example] network [tcp]\n');
    t.match(cli.stdout, 'outbound: direct (direct)');
    const api = await get(gateway, `${API}/v1/flows/${id}/explain`, token);
    t.equal(api.status, 200);
    const body = JSON.parse(api.text) as { text: string; explanation: { ruleIndex: number; input: { nameOrigin: string } } };
    t.equal(`flow ${id}\n${body.text}\n`, cli.stdout, 'the CLI prints the API\'s text');
    t.equal(body.explanation.ruleIndex, 2);
    t.equal(body.explanation.input.nameOrigin, 'fake-ip');
    t.same((body as unknown as { sniffedAfter: unknown }).sniffedAfter, { domain: null, protocol: 'http' }, 'the API says what was sniffed after routing');
    const json = await sluiceCli('explain', id, '--json');
    t.equal(JSON.parse(json.stdout).ruleIndex, 2, '--json');
    const missing = await sluiceCli('explain', '00000000-0000-0000-0000-000000000000');
    t.equal(missing.code, 1, 'an unknown id exits 1');
    t.match(missing.stderr, /no open flow with id/);
    t.equal((await get(gateway, `${API}/v1/flows/nope/explain`, token)).status, 404, 'the API answers 404 for an unknown id');

    const m1 = await scrape();
    t.ok(sampleSum(m1, 'sluice_flows_active', { network: 'tcp', outbound: 'direct' }) >= 1, 'the download is an active flow');
    const down1 = sampleSum(m1, 'sluice_flow_bytes_total', { direction: 'down', outbound: 'direct' });
    // The download runs at 1 MB/s; on a loaded machine a scrape may come
    // before the next chunk, so the counter is read until it moved (10 s at most).
    const started = Date.now();
    let down2 = down1;
    while (down2 - down1 <= 500_000 && Date.now() - started < 10_000) {
      await sleep(500);
      down2 = sampleSum(await scrape(), 'sluice_flow_bytes_total', { direction: 'down', outbound: 'direct' });
    }
    t.ok(down2 - down1 > 500_000, `bytes of the open flow count while it runs (${down2 - down1} in ${Date.now() - started} ms)`);
    await get(gateway, `${API}/v1/flows`, token).then(() => gateway.exec(['curl', '-sS', '-m', '10', '-X', 'DELETE', '-H', `Authorization: Bearer ${token}`, `${API}/v1/flows/${id}`], { allowFail: true }));
    await download;
  });

  await t.test('sluice capture --pcap FILE --filter 80 --count N: a pcap tcpdump reads back', async (t) => {
    const file = path.join(dir, 'cap.pcap');
    const ip = await fakeIp('dl.example');
    const marks = engine.lines.length;
    const proc = gateway.spawn([process.execPath, SLUICE_BIN, 'capture', '--pcap', file, '--filter', '80', '--count', '25', '--secret-file', secretFile], { env: childEnv });
    const out = collectOutput(proc);
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    await engine.waitFor((l) => l.msg === 'capture started' && engine.lines.indexOf(l) >= marks, 15_000, '"capture started"');
    let n = 0;
    let code: number | null | undefined;
    // Traffic until the count is reached: downloads on port 80 and DNS (port 53, filtered out).
    while (code === undefined && n < 20) {
      await fakeIp('dl.example');
      await curl(client, ['--local-port', String(45200 + n), '--resolve', `dl.example:80:${ip}`, 'http://dl.example/small.txt']);
      n++;
      code = await Promise.race([exited, sleep(300).then(() => undefined)]);
    }
    code ??= await Promise.race([exited, sleep(10_000).then(() => undefined)]);
    t.equal(code, 0, `sluice capture exited 0 by itself after --count packets (${out()})`);
    t.match(out(), /25 packets/, 'it says how many');
    const lines = await tcpdump(file);
    t.comment(lines.slice(0, 6).join('\n'));
    t.equal(lines.length, 25, 'tcpdump reads exactly --count packets');
    t.ok(lines.every((l) => /\.80[ :]/.test(l)), 'every one has port 80 at one end (the DNS queries were filtered out)');
    t.ok(lines.some((l) => l.includes(`${CLIENT_V4}.45200 > ${ip}.80: Flags [S]`)), 'the first download SYN, as it entered the TUN');
    t.ok(lines.some((l) => l.includes(`${ip}.80 > ${CLIENT_V4}.45200: Flags [S.]`)), "sluice's SYN-ACK, as it left");
    t.ok((await tcpdump(file, '-A')).some((l) => l.includes('GET /small.txt HTTP/1.1')), 'with the payload');
  });

  await t.test('sluice capture without --pcap prints one line per packet; a host filter; usage errors', async (t) => {
    const ip = await fakeIp('dl.example');
    const marks = engine.lines.length;
    const proc = gateway.spawn([process.execPath, SLUICE_BIN, 'capture', '--filter', CLIENT_V4, '--count', '6', '--secret-file', secretFile], { env: childEnv });
    let stdout = '';
    proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    await engine.waitFor((l) => l.msg === 'capture started' && engine.lines.indexOf(l) >= marks, 15_000, '"capture started"');
    await curl(client, ['--local-port', '45300', '--resolve', `dl.example:80:${ip}`, 'http://dl.example/small.txt']);
    const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout')]);
    t.equal(code, 0, 'exits after 6 packets');
    const lines = stdout.trim().split('\n');
    t.comment(lines.join('\n'));
    t.equal(lines.length, 6);
    t.match(lines[0], new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{6} TCP ${CLIENT_V4.replace(/\./g, '\\.')}\\.45300 > ${ip.replace(/\./g, '\\.')}\\.80 \\[S\\] len 0$`), 'the SYN');
    t.match(lines[1], /\[S\.\] len 0$/, 'the SYN-ACK');
    t.ok(lines.every((l) => l.includes(CLIENT_V4)), 'only the filtered host');
    const bad = await sluiceCli('capture', '--filter', 'example.com');
    t.equal(bad.code, 2);
    t.match(bad.stderr, /--filter: expected an IP address \(HOST\) or a port number \(PORT\)/);
    const noSecret = await gateway.exec([process.execPath, SLUICE_BIN, 'capture', '--count', '1', '--secret', 'wrong'], { allowFail: true, env: childEnv });
    t.equal(noSecret.code, 1, 'a wrong secret exits 1');
    t.match(noSecret.stderr, /refused the secret/);
  });
});
