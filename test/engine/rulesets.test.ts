/**
 * Rule sets in users' formats and GeoIP through `sluice run`, with curl in
 * the client namespace:
 *  - a Clash classical provider (YAML) and a sing-box source (JSON) block
 *    the names they list; other names pass;
 *  - `geoip: [FR]` from a MaxMind DB the test writes blocks an address the
 *    database places in FR, not one it does not know;
 *  - a remote Clash domain list served by an HTTP server in the server
 *    namespace, refreshed every 10 s: an edit on the server takes effect
 *    without a reload, the last good copy is kept beside the state file,
 *    and a restart while the server is down runs on that copy.
 *
 * Needs root, /dev/net/tun, curl.
 */
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireRoot, waitForJsonLine, type Netns } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { BLOB_SERVER, Engine, TUN, childEnv, curl, describe, requireCommands, tempDir, createLab } from '../fixtures/engine/lab.js';
import { startWithState } from '../fixtures/engine/restartable.js';
import { writeCountryMmdb } from '../fixtures/mmdb-writer.js';

const FILE_SERVER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/file-server.js');
const FR_ADDRESS = '203.0.113.130';


let localPort = 46000;
/** Whether a request for `name` (resolved to `ip`) gets through; checks the flow line's rule. */
async function passes(client: Netns, engine: Engine, name: string, ip = SERVER_V4): Promise<{ ok: boolean; rule: number; outbound: string }> {
  const p = localPort++;
  const r = await curl(client, ['--local-port', String(p), '--resolve', `${name}:8080:${ip}`, '-o', '/dev/null', '-w', '%{size_download}', `http://${name}:8080/bytes/500`], 10);
  const f = await engine.flowFrom(`${CLIENT_V4}:${p}`);
  if (f === null) throw new Error(`no flow line for ${name} (${describe(r)})`);
  return { ok: r.stdout === '500', rule: f.rule, outbound: f.outbound };
}

t.test('rule sets in Clash and sing-box formats, GeoIP, a remote set', { timeout: 240_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl'])) return;
  const dir = tempDir(t, 'rsets');
  const served = tempDir(t, 'served');
  const lab = await createLab(t, 'engrsets');
  const { client, gateway, server } = await threeNamespaces(lab);
  await server.exec(['ip', 'addr', 'add', `${FR_ADDRESS}/24`, 'dev', 'eth0']);
  const blob = server.spawn([process.execPath, BLOB_SERVER, '8080'], { env: childEnv });
  await waitForJsonLine(blob, (m: { event?: string }) => m.event === 'ready');
  const startFiles = async (): Promise<ReturnType<Netns['spawn']>> => {
    const fs = server.spawn([process.execPath, FILE_SERVER, SERVER_V4, '8090', served], { env: childEnv });
    await waitForJsonLine(fs, (m: { event?: string }) => m.event === 'ready');
    return fs;
  };
  let files = await startFiles();
  t.teardown(() => {
    files.kill('SIGTERM');
  });

  writeFileSync(path.join(dir, 'clash.yaml'), 'payload:\n  - DOMAIN-SUFFIX,clash-blocked.example\n  - IP-CIDR,198.51.100.0/24,no-resolve\n');
  writeFileSync(path.join(dir, 'sb.json'), JSON.stringify({ version: 2, rules: [{ domain: ['singbox-blocked.example'], domain_keyword: ['sbkw'] }] }));
  writeFileSync(path.join(dir, 'country.mmdb'), writeCountryMmdb({ '203.0.113.128/25': 'FR', '2001:db8:5::/48': 'JP' }));
  writeFileSync(path.join(served, 'remote.txt'), '# served by the test\nr1.example\n');
  const yaml = `
log: { level: info, format: json }
tun: { name: ${TUN} }
sniff: { timeoutMs: 1000 }
dns: { hijack: false, fakeIp: { persistPath: null } }
outbounds:
  - { name: direct, type: direct }
  - { name: block, type: reject }
geoip: { database: country.mmdb }
ruleSets:
  clash: { format: clash, behavior: classical, path: clash.yaml }
  sb: { format: sing-box, path: sb.json }
  remote: { format: clash, behavior: domain, url: "http://${SERVER_V4}:8090/remote.txt", interval: 10 }
rules:
  - { ruleSet: [clash], outbound: block }
  - { ruleSet: [sb], outbound: block }
  - { geoip: [FR], outbound: block }
  - { ruleSet: [remote], outbound: block }
final: direct
`;
  let engine = await startWithState(t, gateway, dir, yaml);
  await engine.waitFor((l) => l.msg === 'rule set downloaded' && l.ruleSet === 'remote', 15_000, 'the first download');

  t.match(await passes(client, engine, 'a.clash-blocked.example'), { ok: false, rule: 0, outbound: 'block' }, 'Clash classical DOMAIN-SUFFIX blocks');
  t.match(await passes(client, engine, 'singbox-blocked.example'), { ok: false, rule: 1 }, 'sing-box domain blocks');
  t.match(await passes(client, engine, 'x-sbkw-y.example'), { ok: false, rule: 1 }, 'sing-box domain_keyword blocks');
  t.match(await passes(client, engine, 'fr.example', FR_ADDRESS), { ok: false, rule: 2 }, `geoip FR blocks ${FR_ADDRESS}`);
  t.match(await passes(client, engine, 'unknown.example'), { ok: true, rule: -1, outbound: 'direct' }, `an address the database does not know passes (${SERVER_V4})`);
  t.match(await passes(client, engine, 'r1.example'), { ok: false, rule: 3 }, 'the remote set blocks r1');
  t.match(await passes(client, engine, 'r2.example'), { ok: true }, 'and not r2');

  const copy = path.join(dir, 'rulesets', 'remote');
  t.ok(existsSync(copy), 'the last good copy is kept beside the state file');

  // The server's list changes; the interval brings it in without a reload.
  writeFileSync(path.join(served, 'remote.txt'), 'r2.example\n');
  const downloads = (): number => engine.lines.filter((l) => l.msg === 'rule set downloaded' && l.ruleSet === 'remote').length;
  const before = downloads();
  await engine.waitFor(() => downloads() > before, 25_000, 'the refresh');
  t.match(await passes(client, engine, 'r2.example'), { ok: false, rule: 3 }, 'after the refresh r2 is blocked');
  t.match(await passes(client, engine, 'r1.example'), { ok: true }, 'and r1 passes');
  t.equal(readFileSync(copy, 'utf8'), 'r2.example\n', 'the disk copy follows');

  // An invalid list on the server changes nothing.
  writeFileSync(path.join(served, 'remote.txt'), 'r3.example\nDOMAIN,bad line\n');
  await engine.waitFor((l) => l.msg === 'rule set download is invalid; keeping the current entries', 25_000, 'the invalid download');
  t.match(await passes(client, engine, 'r2.example'), { ok: false, rule: 3 }, 'an invalid download keeps the last good entries');

  // Restart with the server down: the disk copy serves.
  await engine.stop();
  files.kill('SIGTERM');
  await new Promise((r) => files.once('exit', r));
  engine = await startWithState(t, gateway, dir, yaml);
  t.ok(engine.lines.some((l) => l.msg === 'rule set read from its disk copy' && l.ruleSet === 'remote'), 'start-up read the disk copy');
  t.ok(engine.lines.some((l) => l.msg === 'rule set download failed; keeping the current entries' && l.ruleSet === 'remote'), 'the download failed and was logged');
  t.match(await passes(client, engine, 'r2.example'), { ok: false, rule: 3 }, 'the disk copy blocks r2 after the restart');
  files = await startFiles();
});
