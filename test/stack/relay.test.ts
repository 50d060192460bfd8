/**
 * Through a real TUN with the Linux kernel as the peer: a client namespace
 * reaches a server namespace via the gateway, whose policy routing sends
 * everything from the LAN into sluice's stack; a relay connects each
 * accepted flow to its original destination.
 */
import t from 'tap';
import path from 'node:path';
import { writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Lab, hasCommand, requireRoot, waitForJsonLine, type TestLike } from '../harness/netns.js';
import { threeNamespaces, steerIntoTun, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { blobChunk, blobSha256 } from '../fixtures/blob.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const relay = path.resolve(here, '../fixtures/stack-relay.js');
const blobServer = path.resolve(here, '../fixtures/blob-server.js');

async function setup(t: TestLike, tag: string, relayArgs: string[] = []) {
  const lab = await Lab.create(t, tag);
  const topo = await threeNamespaces(lab);
  const server = topo.server.spawn([process.execPath, blobServer, '8080']);
  await waitForJsonLine(server, (m: { event?: string }) => m.event === 'ready');
  const gw = topo.gateway.spawn([process.execPath, relay, '--name', 'sl0', ...relayArgs]);
  await waitForJsonLine(gw, (m: { event?: string }) => m.event === 'ready');
  await steerIntoTun(topo.gateway, 'sl0');
  return { lab, ...topo, gw };
}

t.test('curl through the stack: downloads and uploads checked by SHA-256, IPv4 and IPv6', async (t) => {
  if (!requireRoot(t)) return;
  if (!hasCommand('curl')) return t.fail('curl is not installed');
  const { client } = await setup(t, 'relay');
  const size = 20 * 1024 * 1024;
  for (const [label, host] of [['IPv4', SERVER_V4], ['IPv6', `[${SERVER_V6}]`]] as const) {
    const down = await client.sh(`curl -sS --max-time 60 http://${host}:8080/bytes/${size} | sha256sum`, { timeoutMs: 70_000 });
    t.equal(down.split(' ')[0], blobSha256(size), `${label} download of ${size} bytes intact`);
  }
  const file = path.join(tmpdir(), `sluice-upload-${process.pid}.bin`);
  const chunk = blobChunk();
  const parts: Buffer[] = [];
  for (let i = 0; i < 160; i++) parts.push(chunk);
  writeFileSync(file, Buffer.concat(parts));
  t.teardown(() => rmSync(file, { force: true }));
  for (const [label, host] of [['IPv4', SERVER_V4], ['IPv6', `[${SERVER_V6}]`]] as const) {
    const up = JSON.parse(await client.sh(`curl -sS --max-time 60 --data-binary @${file} http://${host}:8080/sink`, { timeoutMs: 70_000 })) as { bytes: number; sha256: string };
    t.equal(up.bytes, 160 * chunk.length, `${label} upload size`);
    t.equal(up.sha256, blobSha256(160 * chunk.length), `${label} upload intact`);
  }
});

t.test('a refused upstream gives the client a refused connection at once', async (t) => {
  if (!requireRoot(t)) return;
  const { client } = await setup(t, 'refuse');
  const started = Date.now();
  const res = await client.exec(['curl', '-sS', '--max-time', '10', `http://${SERVER_V4}:9/`], { allowFail: true });
  t.equal(res.code, 7, `curl reports "couldn't connect" (${res.stderr.trim()})`);
  t.ok(Date.now() - started < 3000, 'fails fast, not by timeout');
});

t.test('iperf3 through the stack, both directions, IPv4 and IPv6', async (t) => {
  if (!requireRoot(t)) return;
  if (!hasCommand('iperf3')) return t.fail('iperf3 is not installed');
  const { client, server } = await setup(t, 'iperf');
  server.spawn(['iperf3', '-s', '-p', '5201']);
  await new Promise((r) => setTimeout(r, 500));
  for (const [label, host] of [['IPv4', SERVER_V4], ['IPv6', SERVER_V6]] as const) {
    for (const reverse of [false, true]) {
      const args = ['iperf3', '-c', host, '-p', '5201', '-t', '2', '-J'];
      if (reverse) args.push('-R');
      const res = await client.exec(args, { timeoutMs: 30_000, allowFail: true });
      const j = JSON.parse(res.stdout || '{}') as { end?: { sum_received?: { bytes: number; bits_per_second: number } }; error?: string };
      const got = j.end?.sum_received;
      t.ok(got !== undefined && got.bytes > 10_000_000, `${label} ${reverse ? 'server -> client' : 'client -> server'}: ${got ? (got.bits_per_second / 1e9).toFixed(2) + ' Gbit/s' : j.error ?? res.stderr}`);
    }
  }
});
