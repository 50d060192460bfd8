/**
 * `sluice status`, `sluice flows [--json]`, `sluice close ID|--all` and
 * `sluice reload` against a running `sluice run` (issue 9, CLI), in the
 * gateway namespace where its API listens, with a rate-limited download
 * from the client namespace as the live flow. The commands find the API
 * and the generated secret through --config (api.listen, api.secretFile).
 * Also: a wrong secret, no sluice at the address, an unknown id, the live
 * view on a terminal (through `script`, a pty), and a reload refused for
 * a broken configuration (exit 1, the running one kept).
 *
 * Needs root, /dev/net/tun, ip, nft, curl, nginx (nginx-light), script (util-linux).
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requireRoot, type Netns } from '../harness/netns.js';
import { SERVER_V4 } from '../harness/topology.js';
import { childEnv, requireCommands, SLUICE_BIN } from '../fixtures/engine/lab.js';
import { controlLab, startDownload, within, WEB_NAME, type ControlLab } from '../fixtures/control-lab.js';

const DEST = `${SERVER_V4}:80`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function tempDirFor(t: Test): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-cli-sets-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function sluice(ns: Netns, args: string[], timeoutMs = 30_000): Promise<Run> {
  return ns.exec(['env', '-u', 'NODE_OPTIONS', process.execPath, SLUICE_BIN, ...args], { allowFail: true, env: childEnv, timeoutMs });
}

interface Snapshot {
  downloadTotal: number;
  uploadTotal: number;
  connections: Array<{ id: string; download: number; upload: number; chains: string[]; metadata: Record<string, string> }> | null;
}

async function flowsJson(t: Test, lab: ControlLab): Promise<Snapshot> {
  const r = await sluice(lab.gateway, ['flows', '--json', '--config', lab.config]);
  t.equal(r.code, 0, `sluice flows --json exits 0 ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as Snapshot;
}

async function findFlow(t: Test, lab: ControlLab): Promise<Snapshot['connections'] extends Array<infer C> | null ? C | null : never> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const snap = await flowsJson(t, lab);
    const c = snap.connections?.find((x) => `${x.metadata.destinationIP}:${x.metadata.destinationPort}` === DEST) ?? null;
    if (c !== null || Date.now() > deadline) return c;
    await new Promise((r) => setTimeout(r, 300));
  }
}

t.test('status, flows, close and their errors against a live download', { timeout: 240_000 }, async (t) => {
  if (!requireRoot(t) || !requireCommands(t, ['ip', 'nft', 'curl', 'nginx', 'script'])) return;
  const lab = await controlLab(t, 'clicmdab');
  const download = startDownload(t, lab.client);

  const flow = await findFlow(t, lab);
  t.ok(flow !== null, `flows --json lists the download (${flow?.id})`);
  if (flow === null) return;
  t.equal(flow.metadata.network, 'tcp', 'metadata.network');
  t.equal(flow.chains[0], 'direct', 'chains[0] is the outbound');
  await new Promise((r) => setTimeout(r, 1500));
  const later = (await flowsJson(t, lab)).connections?.find((c) => c.id === flow.id);
  t.ok(later !== undefined && later.download > flow.download, `its download counter grows: ${flow.download} -> ${later?.download}`);

  const status = await sluice(lab.gateway, ['status', '--config', lab.config]);
  t.equal(status.code, 0, `status exits 0 ${status.stderr.trim()}`);
  t.comment(status.stdout);
  t.match(status.stdout, /^sluice \S+/, 'status: the version');
  t.match(status.stdout, /flows\s+1 open \(tcp 1; by outbound: direct 1\)/, 'status: the flow counts');
  t.match(status.stdout, /traffic\s+up .*down [1-9][\d.]* [kMG]?B\/s/, 'status: a download rate');
  t.match(status.stdout, /uptime\s+\d+s/, 'status: the uptime');
  t.match(status.stdout, /memory\s+RSS [1-9][\d.]* MiB; TCP buffers [\d.]+ MiB of 128\.0 MiB \(peak [\d.]+ MiB/, 'status: the RSS and the TCP buffers against limits.tcpBufferMiB');
  t.match(status.stdout, new RegExp(`config\\s+${lab.config.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'status: the config file');
  const statusJson = await sluice(lab.gateway, ['status', '--json', '--config', lab.config]);
  const sj = JSON.parse(statusJson.stdout) as { flows: { open: number }; traffic: { downloadTotal: number }; memory: { rssBytes: number; tcpBuffers: { limitBytes: number } } };
  t.ok(sj.memory.rssBytes > 0 && sj.memory.tcpBuffers.limitBytes === 128 * 1024 * 1024, 'status --json: memory');
  t.equal(sj.flows.open, 1, 'status --json: one open flow');
  t.ok(sj.traffic.downloadTotal > 0, `status --json: downloadTotal ${sj.traffic.downloadTotal}`);

  // Plain table (stdout is a pipe): a header line, the column titles, the flow sorted by rate.
  const plain = await sluice(lab.gateway, ['flows', '--config', lab.config]);
  t.equal(plain.code, 0, 'flows (plain) exits 0');
  const lines = plain.stdout.trimEnd().split('\n');
  t.match(lines[0], /1 open/, `flows header: ${lines[0]}`);
  t.match(lines[1], /^ID\s+CLIENT\s+DESTINATION\s+NAME/, 'flows column titles');
  t.match(lines[2], new RegExp(`^${flow.id}\\s+192\\.0\\.2\\.2:\\d+\\s+${DEST.replace(/\./g, '\\.')}\\s+${WEB_NAME.replace(/\./g, '\\.')}\\s+tcp`), `flows row: ${lines[2]}`);
  // Columns: ID CLIENT DESTINATION NAME PROTO RULE OUTBOUND UP/s DOWN/s UP DOWN AGE.
  const cols = lines[2]!.split(/\s{2,}/);
  t.match(cols[8], /^[1-9][\d.]* [kMG]?B$/, `the row has a non-zero down rate: ${cols[8]}`);

  // The live view on a terminal: `script` gives it a pty; it quits on q.
  const live = await lab.gateway.exec(
    ['sh', '-c', `(sleep 6; printf q) | script -qfec "env -u NODE_OPTIONS ${process.execPath} ${SLUICE_BIN} flows --interval 500 --config ${lab.config}" /dev/null`],
    { allowFail: true, env: { ...childEnv, COLUMNS: '160', LINES: '30' }, timeoutMs: 30_000 },
  );
  t.equal(live.code, 0, `the live view quits on q with 0 (${live.stderr.trim().slice(0, 200)})`);
  t.match(live.stdout, /\u001b\[\?1049h/, 'it used the alternate screen');
  t.ok((live.stdout.match(/sluice flows at/g) ?? []).length >= 3, `it redrew (${(live.stdout.match(/sluice flows at/g) ?? []).length} frames)`);
  t.match(live.stdout, new RegExp(DEST.replace(/\./g, '\\.')), 'the frames show the flow');

  // Errors: wrong secret, nothing listening, unknown id.
  const wrong = await sluice(lab.gateway, ['status', '--api', '127.0.0.1:9090', '--secret', 'wrong']);
  t.equal(wrong.code, 1, 'a wrong secret: exit 1');
  t.match(wrong.stderr, /refused the secret from --secret \(401/, `a wrong secret: ${wrong.stderr.trim()}`);
  const none = await sluice(lab.gateway, ['flows', '--api', '127.0.0.1:9', '--secret', 'x']);
  t.equal(none.code, 1, 'nothing listening: exit 1');
  t.match(none.stderr, /sluice is not running, or its API is not at 127\.0\.0\.1:9 \(ECONNREFUSED\)/, `nothing listening: ${none.stderr.trim()}`);
  const unknown = await sluice(lab.gateway, ['close', 'no-such-flow', '--config', lab.config]);
  t.equal(unknown.code, 1, 'an unknown id: exit 1');
  t.match(unknown.stderr, /no open flow with id no-such-flow/, `an unknown id: ${unknown.stderr.trim()}`);
  const usage = await sluice(lab.gateway, ['close', '--config', lab.config]);
  t.equal(usage.code, 2, 'close without an id: usage, exit 2');

  // Close the download by id: curl fails at once, the flow is gone.
  const before = Date.now();
  const closed = await sluice(lab.gateway, ['close', flow.id, '--config', lab.config]);
  t.equal(closed.code, 0, `close ${flow.id}: exit 0 ${closed.stderr.trim()}`);
  t.equal(closed.stdout.trim(), `closed ${flow.id}`, 'close says so');
  const ended = await within(download.ended, 10_000);
  t.ok(ended !== null, `curl ended ${ended === null ? 'not within 10 s' : `${ended.at - before} ms after the close`}`);
  if (ended !== null) t.not(ended.code, 0, `curl failed: ${ended.stderr.trim()}`);
  const gone = await flowsJson(t, lab);
  t.notOk(gone.connections?.some((c) => c.id === flow.id), 'the flow is no longer listed');
  const again = await sluice(lab.gateway, ['close', flow.id, '--config', lab.config]);
  t.equal(again.code, 1, 'closing it again: exit 1 (no such flow)');

  // --all: two downloads, both end.
  const d1 = startDownload(t, lab.client);
  const d2 = startDownload(t, lab.client);
  const deadline = Date.now() + 20_000;
  while (((await flowsJson(t, lab)).connections ?? []).filter((c) => `${c.metadata.destinationIP}:${c.metadata.destinationPort}` === DEST).length < 2 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 300));
  }
  const all = await sluice(lab.gateway, ['close', '--all', '--config', lab.config]);
  t.equal(all.code, 0, `close --all: exit 0 ${all.stderr.trim()}`);
  t.match(all.stdout, /closed all flows \(2 were open\)/, `close --all: ${all.stdout.trim()}`);
  const [e1, e2] = await Promise.all([within(d1.ended, 10_000), within(d2.ended, 10_000)]);
  t.ok(e1 !== null && e2 !== null, 'both downloads ended');
});

t.test('reload: applied, and refused for a broken rule set', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t) || !requireCommands(t, ['ip', 'nft', 'curl', 'nginx'])) return;
  // The reload re-reads the rule-set files (the SIGHUP reload); the set grows from 1 to 3 entries.
  const dir = tempDirFor(t);
  const setFile = path.join(dir, 'blocked.txt');
  writeFileSync(setFile, 'one.example\n');
  const lab = await controlLab(t, 'clicmdcd', `ruleSets:\n  blocked: { type: domain, path: ${setFile} }\nrules:\n  - { ruleSet: [blocked], outbound: direct }\n`);
  writeFileSync(setFile, 'one.example\ntwo.example\nthree.example\n');
  const ok = await sluice(lab.gateway, ['reload', '--config', lab.config]);
  t.equal(ok.code, 0, `reload: exit 0 ${ok.stderr.trim()}`);
  t.match(ok.stdout, /^reloaded\n\s+changed: rule sets changed: blocked \(1 -> 3 entries\)/, `reload says what changed: ${JSON.stringify(ok.stdout)}`);
  const providers = await lab.gateway.exec(['curl', '-sS', '-H', `Authorization: Bearer ${lab.secret()}`, 'http://127.0.0.1:9090/providers/rules'], { timeoutMs: 20_000 });
  t.match(providers.stdout, /"ruleCount":3/, 'GET /providers/rules: the set has 3 entries now');
  // A broken set: refused, exit 1, the problem printed, the running policy kept and the API up.
  writeFileSync(setFile, 'one.example\nregex:([unclosed\n');
  const bad = await sluice(lab.gateway, ['reload', '--api', '127.0.0.1:9090', '--secret-file', lab.secretFile]);
  t.equal(bad.code, 1, 'reload of a broken rule set: exit 1');
  t.match(bad.stderr, /refused \(400\); the running configuration stays\n.*blocked/s, `reload refused: ${bad.stderr.trim().slice(0, 400)}`);
  const json = await sluice(lab.gateway, ['reload', '--json', '--config', lab.config]);
  t.equal(json.code, 1, 'reload --json of the broken set: exit 1');
  t.equal((JSON.parse(json.stderr) as { ok: boolean }).ok, false, 'reload --json prints the API answer');
  const still = await sluice(lab.gateway, ['status', '--api', '127.0.0.1:9090', '--secret-file', lab.secretFile]);
  t.equal(still.code, 0, 'sluice still answers after the refusal');
  const after = await lab.gateway.exec(['curl', '-sS', '-H', `Authorization: Bearer ${lab.secret()}`, 'http://127.0.0.1:9090/providers/rules'], { timeoutMs: 20_000 });
  t.match(after.stdout, /"ruleCount":3/, 'the running set is the one before the refused reload');
});
