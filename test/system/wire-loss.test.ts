/**
 * Issue 12 item 4: goodput under loss on the wire, `sluice run` in gateway
 * mode (TUN) against the kernel's own forwarding over the same lossy link,
 * in the same run.
 *
 *   client eth0 ──veth── lan0 gateway wan0 ──veth── eth0 server
 *
 * 5 % random loss by nftables `numgen random mod 100 < 5 drop` on the
 * netdev ingress hooks of both ends of the client–gateway veth, with TSO,
 * GSO and GRO off there, so one drop is one wire packet: a drop inside one
 * of the TSO super-segments sluice writes to its TUN loses one MSS of it,
 * which is what loss recovery must repair (the TUN-side lossy test drops
 * whole super-packets instead).
 *
 * For each family: a download (sluice's TCP stack sending to the client)
 * and an upload (its stack receiving), SHA-256 checked, first with the
 * kernel forwarding (sluice not running), then through sluice. The figures
 * go in tap comments; the assertion is a floor relative to the kernel
 * measured in the same run (see FLOOR). The measurements come in rounds,
 * each a kernel run right before a sluice run (sluice started and stopped
 * per round), and the ratio of each pair is what is compared (the median
 * over the rounds): on a shared, loaded machine the load changes over the
 * minutes a test takes, and a kernel phase measured wholly before a sluice
 * phase compared figures taken under different loads.
 *
 * SLUICE_LOSS_BYTES sets the transfer size (default 200 MB, the issue's
 * figure; the whole test took about a minute here).
 *
 * Needs root, curl, nft, ethtool, sha256sum.
 */
import t from 'tap';
import path from 'node:path';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces, SERVER_V4, SERVER_V6 } from '../harness/topology.js';
import { BLOB_SERVER, childEnv, createLab, requireCommands, tempDir } from '../fixtures/engine/lab.js';
import { blobSha256 } from '../fixtures/blob.js';
import { startSluice } from './workstation.js';
import { LOSS_PERCENT, WIRE_LOSS_CONFIG, lossRules } from '../fixtures/wire-loss.js';

const SIZE = Number(process.env.SLUICE_LOSS_BYTES ?? 200 * 1024 * 1024);
/**
 * sluice's goodput must reach this fraction of the kernel's, per direction
 * and family (the median of the paired rounds). The issue's goal is 0.25,
 * which is a benchmark figure, not this test's bar: the ratio depends on the
 * machine more than on sluice. On a loaded 2-core machine the kernel slows
 * more than sluice and the medians were 25-49 %; on an idle one the kernel
 * did 627-1634 Mbit/s against sluice's 100-313, and the medians were
 * 13-25 % (IPv6 uploads lowest, one round at 12 %). The floor sits below
 * that and still catches a return to what the issue reported (downloads at
 * 7 % of the kernel's, one crawling at 5 Mbit/s); a stall fails on its own
 * (curl --speed-limit). The SHA-256 checks caught the recovery this
 * replaced: it corrupted an IPv4 download here. Override with
 * SLUICE_LOSS_FLOOR.
 */
const FLOOR = Number(process.env.SLUICE_LOSS_FLOOR ?? 0.1);
/**
 * Downloads (sluice's sender) since CUBIC's ssthresh follows cwnd, flights
 * end on whole segments and four tail loss probes precede the RTO: on a
 * loaded 2-core machine the median ratios went from 30-43 % to 46-64 %
 * (sluice 335-378 Mbit/s against 198-273 for the build before, no RTO left
 * in 200 MB). Idle machines were not measured after that change; the old
 * build's idle downloads were at 13-25 %, so the floor is raised only
 * half-way from 10 % to that goal. SLUICE_LOSS_FLOOR overrides both.
 */
const FLOOR_DOWN = Number(process.env.SLUICE_LOSS_FLOOR ?? 0.15);
/** Runs per measurement; the median is compared (SLUICE_LOSS_RUNS): three, since one kernel run under random loss can be an outlier (an IPv4 upload at 1835 Mbit/s beside 392 for IPv6 in one CI run). */
const RUNS = Number(process.env.SLUICE_LOSS_RUNS ?? 3);

interface Figures {
  down: number;
  up: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** One download and one upload from the client; SHA-256 checked; Mbit/s by curl's own timing. */
async function transfer(t: Test, client: Netns, host: string, label: string, file: string, uploadSha: string): Promise<Figures> {
  const maxTime = Math.max(120, Math.ceil(SIZE / (256 * 1024))); // a floor of 2 Mbit/s before curl gives up
  // A transfer that stalls (under 256 KiB/s for 30 s) fails at once, as one
  // named assertion, instead of running into the file's timeout and taking
  // every other figure with it.
  const stall = '--speed-limit 262144 --speed-time 30';
  const downOut = await client.sh(
    `curl -sS -g --max-time ${maxTime} ${stall} -w '%{stderr}%{speed_download} %{size_download}' http://${host}:8080/bytes/${SIZE} 2>/tmp/sluice-wireloss-$$.w | sha256sum; cat /tmp/sluice-wireloss-$$.w; rm -f /tmp/sluice-wireloss-$$.w`,
    { timeoutMs: (maxTime + 30) * 1000, env: childEnv },
  );
  const [shaLine = '', stats = ''] = downOut.trim().split('\n');
  const [speedDown, sizeDown] = stats.trim().split(/\s+/).map(Number);
  t.equal(shaLine.split(' ')[0], blobSha256(SIZE), `${label}: download of ${SIZE} bytes intact (${sizeDown} received)`);
  const upOut = await client.sh(`curl -sS -g --max-time ${maxTime} ${stall} -w '\\n%{speed_upload}' -X POST -T ${file} http://${host}:8080/sink`, { timeoutMs: (maxTime + 30) * 1000, env: childEnv });
  const [body, speedUp] = upOut.trim().split('\n');
  const up = JSON.parse(body ?? '{}') as { bytes?: number; sha256?: string };
  t.equal(up.sha256, uploadSha, `${label}: upload of ${SIZE} bytes intact (${up.bytes} received)`);
  return { down: ((speedDown ?? 0) * 8) / 1e6, up: (Number(speedUp) * 8) / 1e6 };
}

const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join('/');

const config = WIRE_LOSS_CONFIG;

// Twelve 200 MB transfers under loss outlast the suite's 300 s per file on a
// slow or loaded machine; the file asks its runner for 15 minutes.
t.setTimeout(900_000);

t.test(`${SIZE} bytes each way under ${LOSS_PERCENT} % wire loss, IPv4 and IPv6: sluice beside the kernel`, { timeout: 3_600_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['curl', 'nft', 'ethtool', 'sha256sum', 'ip'])) return;
  const lab = await createLab(t, 'wireloss');
  const { client, gateway, server } = await threeNamespaces(lab);
  // One drop is one wire packet: no segmentation or receive offloads on the lossy link.
  await client.exec(['ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off', 'gro', 'off']);
  await gateway.exec(['ethtool', '-K', 'lan0', 'tso', 'off', 'gso', 'off', 'gro', 'off']);
  await client.exec(['nft', '-f', '-'], { input: lossRules('eth0', 'sluice_test_wireloss') });
  await gateway.exec(['nft', '-f', '-'], { input: lossRules('lan0', 'sluice_test_wireloss') });

  const srv = server.spawn([process.execPath, BLOB_SERVER, '8080'], { env: childEnv });
  t.teardown(() => void srv.kill('SIGTERM'));
  await new Promise<void>((resolve, reject) => {
    srv.stdout!.once('data', () => resolve());
    srv.once('exit', (code) => reject(new Error(`blob server exited ${code}`)));
  });
  const file = `/tmp/sluice-wireloss-${process.pid}.bin`;
  t.teardown(() => client.exec(['rm', '-f', file], { allowFail: true }).then(() => undefined));
  const uploadSha = (await client.sh(`head -c ${SIZE} /dev/urandom > ${file} && sha256sum ${file}`, { timeoutMs: 120_000 })).split(' ')[0]!;

  const hosts = [
    ['IPv4', SERVER_V4],
    ['IPv6', `[${SERVER_V6}]`],
  ] as const;
  const kernel: Record<string, Figures[]> = { IPv4: [], IPv6: [] };
  const through: Record<string, Figures[]> = { IPv4: [], IPv6: [] };
  const dir = tempDir(t, 'wireloss');
  let tunFlows = 0;
  for (let round = 0; round < RUNS; round++) {
    for (const [family, host] of hosts) kernel[family]!.push(await transfer(t, client, host, `kernel ${family}`, file, uploadSha));
    const engine = await startSluice(t, gateway, dir, config, path.join(dir, 'state.json'));
    t.ok(engine.lines.some((l) => l.msg === 'gateway installed'), `round ${round + 1}: "gateway installed"`);
    for (const [family, host] of hosts) through[family]!.push(await transfer(t, client, host, `sluice ${family}`, file, uploadSha));
    t.equal((await engine.stop()).code, 0, `round ${round + 1}: sluice stops cleanly`);
    tunFlows += engine.flows().filter((f) => f.inbound === 'tun').length;
  }
  t.ok(tunFlows >= 4 * RUNS, `the transfers went through sluice's TUN (${tunFlows} flow lines)`);

  const drops = [client, gateway].map(async (ns) => [...(await ns.sh('nft list table netdev sluice_test_wireloss')).matchAll(/packets (\d+)/g)].map((m) => Number(m[1]))[0] ?? 0);
  const [clientDrops, gatewayDrops] = await Promise.all(drops);
  t.ok(clientDrops! > 100 && gatewayDrops! > 100, `the wire really lost packets both ways (${gatewayDrops} into the gateway, ${clientDrops} into the client)`);

  for (const [family] of hosts) {
    for (const dir of ['down', 'up'] as const) {
      const k = kernel[family]!.map((f) => f[dir]);
      const s = through[family]!.map((f) => f[dir]);
      // Each round's sluice figure over the kernel's of the same round.
      const ratios = s.map((x, i) => (k[i]! > 0 ? x / k[i]! : 0));
      const ratio = median(ratios);
      const floor = dir === 'down' ? FLOOR_DOWN : FLOOR;
      const what = `${family} ${dir === 'down' ? 'download' : 'upload'}`;
      t.comment(`${what}: kernel ${fmt(k)} Mbit/s, sluice ${fmt(s)} Mbit/s per round; ratios ${ratios.map((r) => `${(r * 100).toFixed(0)} %`).join('/')}`);
      t.ok(ratio >= floor, `${what}: sluice ${median(s).toFixed(0)} Mbit/s beside the kernel's ${median(k).toFixed(0)} (median over ${RUNS} rounds); the median paired ratio ${(ratio * 100).toFixed(0)} % (floor ${(floor * 100).toFixed(0)} %, goal 25 %)`);
    }
  }
});
