/**
 * A gateway switched from mode tproxy to mode tun, with clients reusing
 * their ports: the TPROXY run leaves TIME-WAIT sockets with the clients'
 * 4-tuples in the gateway's kernel (sluice's side closed first), and with
 * TCP early demux on, a forwarded SYN matching one gets that socket
 * attached and is dropped by ip_forward for the 60 s of TIME-WAIT. sluice
 * turns net.ipv4.tcp_early_demux off in its namespace in gateway mode
 * (recorded in the state file, restored on stop):
 *   - after the tproxy run the TIME-WAIT sockets are there (the precondition);
 *   - under tun, tcp_early_demux is 0 and the same 4-tuple connects at once;
 *   - the control: with early demux switched back on by hand, another
 *     reused 4-tuple does not connect (the stall this prevents);
 *   - after the stop the sysctl (and everything else) is byte-equal to before.
 *
 * Needs root, /dev/net/tun, ip, nft, ss.
 */
import t from 'tap';
import path from 'node:path';
import { requireRoot, type Netns } from '../harness/netns.js';
import { CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { requireCommands, tempDir } from '../fixtures/engine/lab.js';
import { fullSnapshot, startSluice } from './workstation.js';
import { gatewayConfig, gatewayLab, startNodeScript } from './gateway-lab.js';

const PORT = 8088;

/** A server that answers and closes first, so the side facing the client (sluice's TPROXY socket) closes first too. */
const CLOSER = `require('net').createServer((s) => { s.on('error', () => {}); s.end('hello\\n'); }).listen(${PORT}, () => console.log('ready'));`;

/** Connects from a fixed local port, reads to the end, prints what it got; exit 1 on error, 3 on timeout. */
const FIXED_PORT_CLIENT = `
const s = require('net').connect({ host: process.argv[1], port: ${PORT}, localPort: Number(process.argv[2]) });
let got = ''; s.on('data', (d) => { got += d; }); s.on('end', () => { s.end(); console.log(got.trim()); setTimeout(() => process.exit(0), 200); });
s.on('error', (e) => { console.error(e.code || e.message); process.exit(1); });
setTimeout(() => { console.error('timeout'); process.exit(3); }, Number(process.argv[3]));
`;

async function connectFrom(client: Netns, localPort: number, timeoutMs: number): Promise<{ code: number; out: string }> {
  const r = await client.exec([process.execPath, '-e', FIXED_PORT_CLIENT, SERVER_V4, String(localPort), String(timeoutMs)], { allowFail: true, timeoutMs: timeoutMs + 10_000, env: { ...process.env, NODE_OPTIONS: '' } });
  return { code: r.code, out: (r.stdout + r.stderr).trim() };
}

async function timeWait(gateway: Netns, localPort: number): Promise<boolean> {
  // The TPROXY listener is dual-stack: its IPv4 sockets show as [::ffff:a.b.c.d].
  const out = (await gateway.sh(`ss -Htan state time-wait "( dport = :${localPort} )"`)).replace(/\[::ffff:([0-9.]+)\]/g, '$1');
  return out.includes(`${SERVER_V4}:${PORT}`) && out.includes(`${CLIENT_V4}:${localPort}`);
}

t.test('gateway tproxy -> tun: reused client ports connect at once (TCP early demux off, restored on stop)', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t)) return;
  if (!requireCommands(t, ['ip', 'nft', 'ss'])) return;
  const dir = tempDir(t, 'gwswitch');
  const { client, gateway, server } = await gatewayLab(t, 'gwswitch', { sysctl: ['net.ipv4.tcp_early_demux=1'] });
  await startNodeScript(t, server, CLOSER);
  const before = await fullSnapshot(gateway);
  const state = path.join(dir, 'state.json');

  let engine = await startSluice(t, gateway, dir, gatewayConfig('tproxy'), state);
  t.equal((await gateway.sh('sysctl -n net.ipv4.tcp_early_demux')).trim(), '0', 'tproxy: tcp_early_demux is 0 while running');
  for (const port of [40100, 40101]) {
    const r = await connectFrom(client, port, 10_000);
    t.same(r, { code: 0, out: 'hello' }, `tproxy: from port ${port} through the TPROXY listener`);
  }
  t.equal((await engine.stop()).code, 0, 'tproxy: SIGTERM exits 0');
  t.equal((await gateway.sh('sysctl -n net.ipv4.tcp_early_demux')).trim(), '1', 'restored to 1 on stop');
  t.ok((await timeWait(gateway, 40100)) && (await timeWait(gateway, 40101)), 'the gateway holds TIME-WAIT sockets with both 4-tuples');

  engine = await startSluice(t, gateway, dir, gatewayConfig('tun'), state);
  t.equal((await gateway.sh('sysctl -n net.ipv4.tcp_early_demux')).trim(), '0', 'tun: tcp_early_demux is 0 while running');
  t.ok(await timeWait(gateway, 40100), 'the TIME-WAIT socket of port 40100 is still there');
  const reused = await connectFrom(client, 40100, 8000);
  t.same(reused, { code: 0, out: 'hello' }, 'tun: the reused 4-tuple connects at once (through the TUN)');
  t.match(await engine.waitFor((l) => l.msg === 'flow' && l.dst === `${SERVER_V4}:${PORT}`, 5000, 'its flow line'), { src: `${CLIENT_V4}:40100` }, 'with a flow line from the TUN');

  // The control: early demux back on by hand; the other reused 4-tuple stalls.
  await gateway.sh('sysctl -qw net.ipv4.tcp_early_demux=1');
  if (await timeWait(gateway, 40101)) {
    const stalled = await connectFrom(client, 40101, 3000);
    t.not(stalled.code, 0, `with early demux on, the reused 4-tuple does not connect (${stalled.out})`);
  } else {
    t.comment('the TIME-WAIT socket of port 40101 expired already (a slow machine): control skipped');
  }
  t.equal((await engine.stop()).code, 0, 'tun: SIGTERM exits 0');
  t.equal(await fullSnapshot(gateway), before, 'byte-equal to before (tcp_early_demux as it was recorded)');
});
