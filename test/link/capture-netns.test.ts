/**
 * Captures of a real `sluice run` in a namespace lab, read back by tcpdump:
 * SLUICE_CAPTURE_FILE (what the integration harness uses to leave a pcap
 * behind for a failing test) records the TUN from the first packet, keeps
 * only what the filter names, and the kernel's tcpdump parses the file.
 *
 * Needs root, /dev/net/tun, curl, tcpdump.
 */
import t from 'tap';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { requireRoot } from '../harness/netns.js';
import { threeNamespaces, CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { Engine, SLUICE_BIN, TUN, childEnv, createLab, curl, describe, requireCommands, startWebServer, steer, tempDir } from '../fixtures/engine/lab.js';

const execFileP = promisify(execFile);

const CONFIG = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { hijack: false }
outbounds: [ { name: direct, type: direct } ]
final: direct
`;

async function tcpdump(file: string, ...expr: string[]): Promise<string[]> {
  const { stdout } = await execFileP('tcpdump', ['-nn', '-r', file, ...expr], { env: { ...process.env, NODE_OPTIONS: '' } });
  return stdout.trim() === '' ? [] : stdout.trim().split('\n');
}

t.test('SLUICE_CAPTURE_FILE: a filtered pcap of the TUN that tcpdump reads', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'tcpdump'])) return;
  const lab = await createLab(t, 'capturee');
  const { client, gateway, server } = await threeNamespaces(lab);
  const dir = tempDir(t, 'capture');
  await startWebServer(t, server);
  const config = path.join(dir, 'sluice.yaml');
  writeFileSync(config, CONFIG);
  const pcap = path.join(dir, 'port80.pcap');
  const engine = new Engine(gateway.spawn([process.execPath, SLUICE_BIN, 'run', '--config', config], { env: { ...childEnv, SLUICE_CAPTURE_FILE: pcap, SLUICE_CAPTURE_FILTER: '80' } }));
  t.teardown(() => {
    if (!t.passing()) t.comment(engine.transcript());
  });
  await engine.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
  await steer(gateway, TUN);
  t.ok(engine.lines.some((l) => l.msg === 'capturing into a file' && l.path === pcap), 'sluice says it captures');

  const r = await curl(client, ['--local-port', '41080', `http://${SERVER_V4}/`]);
  t.equal(r.code, 0, `curl on port 80 (${describe(r)})`);
  // another port the filter leaves out: a refused connection is enough
  const other = await curl(client, ['--local-port', '41081', `http://${SERVER_V4}:8081/`], 5);
  t.not(other.code, 0, 'nothing listens on 8081');
  await engine.waitForFlow({ src: `${CLIENT_V4}:41080` });

  // the file is written as packets arrive: readable while sluice runs
  const live = await tcpdump(pcap);
  t.ok(live.length >= 6, `${live.length} packets in the file while sluice runs`);
  const stopped = await engine.stop();
  t.equal(stopped.code, 0, 'sluice stops cleanly');
  const written = engine.lines.find((l) => l.msg === 'capture file written');
  t.ok(written, 'sluice logs the capture file at stop');

  const all = await tcpdump(pcap);
  t.comment(all.slice(0, 12).join('\n'));
  t.ok(all.every((l) => / IP6? /.test(l) && /\.80[ :]/.test(l)), 'every packet has port 80 at one end');
  t.ok(all.some((l) => l.includes(`${CLIENT_V4}.41080 > ${SERVER_V4}.80: Flags [S]`)), 'the client SYN, as it entered the TUN');
  t.ok(all.some((l) => l.includes(`${SERVER_V4}.80 > ${CLIENT_V4}.41080: Flags [S.]`)), "sluice's SYN-ACK, as it left the TUN");
  const get = await tcpdump(pcap, '-A', 'tcp', 'port', '41080');
  t.ok(get.some((l) => l.includes('GET / HTTP/1.1')), 'the HTTP request bytes are in the file');
  t.equal((await tcpdump(pcap, 'port', '41081')).length, 0, 'the port-8081 connection was filtered out');
  t.equal(written?.packets, all.length, 'the logged packet count matches the file');
});
