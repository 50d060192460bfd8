/**
 * Hostile input through a real TUN: while a download runs through the
 * stack, another process in the client namespace floods the gateway with
 * random and mutated TCP, UDP and ICMP (IPv4 and IPv6, odd flags, options,
 * extension headers, lengths and checksums) that the kernel routes into the
 * TUN. The stack must count and drop them, never crash, and the download
 * must finish intact.
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, requireRoot, waitForJsonLine, hasCommand } from '../harness/netns.js';
import { threeNamespaces, steerIntoTun, SERVER_V4 } from '../harness/topology.js';
import { blobSha256 } from '../fixtures/blob.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const relay = path.resolve(here, '../fixtures/stack-relay.js');
const blobServer = path.resolve(here, '../fixtures/blob-server.js');
// Python fixtures are not compiled: take it from the source tree.
const hostile = path.resolve(here, '../../../test/fixtures/hostile.py');

interface Stats {
  event: string;
  rxPackets: number;
  drops: Record<string, number>;
  tcpFlowsActive: number;
}

t.test('random and mutated packets into the TUN never crash the stack or disturb a running download', async (t) => {
  if (!requireRoot(t)) return;
  if (!hasCommand('python3')) return t.fail('python3 is needed for the packet generator');
  const lab = await Lab.create(t, 'hostile');
  const { client, gateway, server } = await threeNamespaces(lab);
  const srv = server.spawn([process.execPath, blobServer, '8080']);
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const gw = gateway.spawn([process.execPath, relay, '--name', 'sl0']);
  await waitForJsonLine(gw, (m: { event?: string }) => m.event === 'ready');
  await steerIntoTun(gateway, 'sl0');
  const mac = (await gateway.sh('cat /sys/class/net/lan0/address')).trim();
  const stats = async (): Promise<Stats> => {
    const p = waitForJsonLine<Stats>(gw, (m) => m.event === 'stats');
    gw.kill('SIGUSR2');
    return p;
  };
  const before = await stats();

  const size = 64 * 1024 * 1024;
  // A slowed download so it is in flight the whole time the flood runs.
  const download = client.sh(`curl -sS --max-time 120 --limit-rate 12M http://${SERVER_V4}:8080/bytes/${size} | sha256sum`, { timeoutMs: 130_000 });
  const flood = client.exec(['python3', hostile, 'eth0', mac, '60000', '7'], { timeoutMs: 120_000 });
  const [digest, sent] = await Promise.all([download, flood]);
  t.equal(digest.split(' ')[0], blobSha256(size), 'the download running through the flood is intact');
  const report = JSON.parse(sent.stdout) as { v4: number; v6: number };
  t.comment(`sent ${report.v4} IPv4 and ${report.v6} IPv6 hostile packets`);

  const after = await stats();
  const dropped = (s: Stats): number => Object.values(s.drops).reduce((a, b) => a + b, 0);
  t.ok(after.rxPackets - before.rxPackets > 20_000, `the hostile packets reached the stack (${after.rxPackets - before.rxPackets} packets in)`);
  t.ok(dropped(after) - dropped(before) > 5_000, `and were counted as drops (${JSON.stringify(after.drops)})`);
  t.equal(after.drops.internal_error ?? 0, 0, 'no packet made the stack throw');
  const again = await client.sh(`curl -sS --max-time 20 http://${SERVER_V4}:8080/bytes/1000000 | sha256sum`);
  t.equal(again.split(' ')[0], blobSha256(1_000_000), 'new flows still work afterwards');
});
