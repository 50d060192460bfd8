/**
 * route.auto (with and without route.kernelPath) and IPv4 reverse-path
 * filtering, in the workstation topology (docs/fast-path.md, "rp_filter"):
 * replies to sluice's direct connections and to kernel-path flows arrive
 * on the uplink without a mark, so the reverse route of their source is
 * the auto-route's (the TUN):
 *   - rp_filter 1 (strict) on the uplink: the replies are dropped (the
 *     kernel's IPReversePathFilter counter rises, the direct flow times
 *     out), and sluice said so at start (one warning naming the interface);
 *   - rp_filter 2 (loose): the same flow works, on the kernel path (the
 *     TUN's counters still) or through the TUN, and no warning;
 *   - sluice leaves rp_filter as it found it.
 *
 * Needs root, /dev/net/tun, ip, nft, curl, nstat.
 */
import t from 'tap';
import path from 'node:path';
import { requireRoot, type Netns } from '../harness/netns.js';
import { curl, describe, requireCommands, tempDir, TUN } from '../fixtures/engine/lab.js';
import { linkPackets, startSluice, workstation, SERVER_V4 } from './workstation.js';
import { CONFIG_HEAD } from './gateway-lab.js';

function config(kernelPath: boolean): string {
  return `${CONFIG_HEAD}rules:
  - { ipCidr: [203.0.113.0/24], outbound: direct }
final: direct
route: { auto: true, table: 2022, priority: 9000, kernelPath: ${kernelPath} }
`;
}

async function rpDrops(ws: Netns): Promise<number> {
  const out = await ws.sh('nstat -az TcpExtIPReversePathFilter');
  return Number(/TcpExtIPReversePathFilter\s+(\d+)/.exec(out)?.[1] ?? 'NaN');
}

for (const kernelPath of [true, false]) {
  for (const mode of [1, 2] as const) {
    t.test(`route.auto${kernelPath ? ' + kernelPath' : ''}, rp_filter ${mode} (${mode === 1 ? 'strict' : 'loose'})`, { timeout: 90_000 }, async (t) => {
      if (!requireRoot(t)) return;
      if (!requireCommands(t, ['ip', 'nft', 'curl', 'nstat'])) return;
      const dir = tempDir(t, 'kprpf');
      const { ws } = await workstation(t, `kprpf${kernelPath ? 'k' : 't'}${mode === 1 ? 's' : 'l'}z`);
      const sysctls = 'net.ipv4.conf.all.rp_filter net.ipv4.conf.eth0.rp_filter';
      await ws.sh(`sysctl -qw net.ipv4.conf.all.rp_filter=${mode} net.ipv4.conf.eth0.rp_filter=${mode}`);
      const engine = await startSluice(t, ws, dir, config(kernelPath), path.join(dir, 'state.json'));
      const warnings = engine.lines.filter((l) => /strict reverse-path filtering/.test(String(l.msg)));
      if (mode === 1) t.match(warnings, [{ interfaces: ['eth0'] }], `one warning at start naming eth0: ${String(warnings[0]?.msg)}`);
      else t.equal(warnings.length, 0, 'no rp_filter warning');
      const drops0 = await rpDrops(ws);
      const tun0 = await linkPackets(ws, TUN);
      const r = await curl(ws, [`http://${SERVER_V4}/`], mode === 1 ? 4 : 10);
      const tun1 = await linkPackets(ws, TUN);
      const drops1 = await rpDrops(ws);
      if (mode === 1) {
        t.not(r.code, 0, `strict: the direct flow fails (${describe(r)})`);
        t.ok(drops1 > drops0, `its replies were dropped by the reverse-path filter (IPReversePathFilter ${drops0} -> ${drops1})`);
      } else {
        t.equal(r.code, 0, `loose: the direct flow works (${describe(r)})`);
        t.equal(drops1, drops0, 'nothing dropped by the reverse-path filter');
        if (kernelPath) t.equal(tun1.rx, tun0.rx, 'on the kernel path: the TUN saw none of it');
        else t.ok(tun1.rx > tun0.rx, 'through the TUN');
      }
      t.equal((await engine.stop()).code, 0, 'SIGTERM exits 0');
      t.equal((await ws.sh(`sysctl -n ${sysctls}`)).trim().split('\n').join(','), `${mode},${mode}`, 'rp_filter is as the test set it');
    });
  }
}
