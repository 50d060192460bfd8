/**
 * RFC behaviour under a hostile path, with the Linux kernel as the peer:
 * an nftables rule in the gateway drops 5% of the packets going into and
 * coming out of the TUN at random (`numgen random`), both directions, while
 * 200 MB go each way over IPv4 and IPv6; every byte is checked by SHA-256.
 */
import t from 'tap';
import { Lab, requireRoot, waitForJsonLine, hasCommand } from '../harness/netns.js';
import { threeNamespaces, steerIntoTun, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { blobSha256 } from '../fixtures/blob.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const relay = path.resolve(here, '../fixtures/stack-relay.js');
const blobServer = path.resolve(here, '../fixtures/blob-server.js');
const SIZE = 200 * 1024 * 1024;

const LOSS_RULESET = `table inet sluice_test_loss {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "sl0" numgen random mod 100 < 5 counter drop
    oifname "sl0" numgen random mod 100 < 5 counter drop
  }
}
`;

t.test('200 MB each way through the stack with 5% random loss on the TUN, IPv4 and IPv6, SHA-256 intact', async (t) => {
  if (!requireRoot(t)) return;
  if (!hasCommand('nft') || !hasCommand('curl')) return t.fail('nft and curl must be installed');
  const lab = await Lab.create(t, 'lossy');
  const { client, gateway, server } = await threeNamespaces(lab);
  const srv = server.spawn([process.execPath, blobServer, '8080']);
  await waitForJsonLine(srv, (m: { event?: string }) => m.event === 'ready');
  const gw = gateway.spawn([process.execPath, relay, '--name', 'sl0']);
  await waitForJsonLine(gw, (m: { event?: string }) => m.event === 'ready');
  await steerIntoTun(gateway, 'sl0');
  await gateway.exec(['nft', '-f', '-'], { input: LOSS_RULESET });

  // The upload body: random bytes in the client namespace's view of /tmp.
  const file = `/tmp/sluice-lossy-${process.pid}.bin`;
  t.teardown(() => client.exec(['rm', '-f', file], { allowFail: true }).then(() => undefined));
  const uploadSha = (await client.sh(`head -c ${SIZE} /dev/urandom > ${file} && sha256sum ${file}`, { timeoutMs: 120_000 })).split(' ')[0];

  for (const [label, host] of [['IPv4', SERVER_V4], ['IPv6', `[${SERVER_V6}]`]] as const) {
    const started = Date.now();
    const down = await client.sh(`curl -sS --max-time 280 http://${host}:8080/bytes/${SIZE} | sha256sum`, { timeoutMs: 300_000 });
    t.equal(down.split(' ')[0], blobSha256(SIZE), `${label}: 200 MB download intact (${((SIZE * 8) / ((Date.now() - started) / 1000) / 1e6).toFixed(0)} Mbit/s)`);
    const upStarted = Date.now();
    const up = JSON.parse(await client.sh(`curl -sS --max-time 280 -X POST -T ${file} http://${host}:8080/sink`, { timeoutMs: 300_000 })) as { bytes: number; sha256: string };
    t.equal(up.bytes, SIZE, `${label}: upload size`);
    t.equal(up.sha256, uploadSha, `${label}: 200 MB upload intact (${((SIZE * 8) / ((Date.now() - upStarted) / 1000) / 1e6).toFixed(0)} Mbit/s)`);
  }
  const counters = await gateway.sh('nft list table inet sluice_test_loss');
  const dropped = [...counters.matchAll(/packets (\d+)/g)].map((m) => Number(m[1]));
  t.ok(dropped.length === 2 && dropped.every((n) => n > 1000), `the rule dropped packets both ways (${dropped.join(' in, ')} out)`);
});
