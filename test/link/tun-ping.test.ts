/**
 * The kernel pings addresses routed into a TUN; the batch reader sees the
 * echo requests and the replies written back in batches reach `ping`.
 */
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, hasCommand, requireRoot, waitForJsonLine } from '../harness/netns.js';

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/tun-responder.js');

t.test('ICMP echo through the TUN, IPv4 and IPv6', async (t) => {
  if (!requireRoot(t)) return;
  if (!hasCommand('ping')) return t.fail('ping is not installed (apt-get install iputils-ping)');
  const lab = await Lab.create(t, 'ping');
  const ns = await lab.netns('host');
  const child = ns.spawn([process.execPath, fixture, '--name', 'sl0']);
  const echoes: { family: number; seq: number }[] = [];
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buffered.slice(0, nl)) as { event: string; family: number; seq: number };
      buffered = buffered.slice(nl + 1);
      if (msg.event === 'echo') echoes.push(msg);
    }
  });
  const ready = await waitForJsonLine<{ event: string; name: string }>(child, (m) => m.event === 'ready');
  t.equal(ready.name, 'sl0');
  await ns.ipBatch([
    'addr add 198.51.100.1/24 dev sl0',
    'route add 203.0.113.0/24 dev sl0',
    'addr add 2001:db8:1::1/64 dev sl0 nodad',
    'route add 2001:db8:2::/64 dev sl0',
  ]);

  const v4 = await ns.exec(['ping', '-c', '5', '-i', '0.2', '-W', '2', '203.0.113.7'], { allowFail: true });
  t.match(v4.stdout, /5 packets transmitted, 5 received/, 'IPv4: every echo answered');
  const v6 = await ns.exec(['ping', '-6', '-c', '5', '-i', '0.2', '-W', '2', '2001:db8:2::7'], { allowFail: true });
  t.match(v6.stdout, /5 packets transmitted, 5 received/, 'IPv6: every echo answered');
  // A large echo crosses as one packet of MTU size.
  const big = await ns.exec(['ping', '-c', '2', '-i', '0.2', '-s', '1472', '-M', 'do', '-W', '2', '203.0.113.9'], { allowFail: true });
  t.match(big.stdout, /2 packets transmitted, 2 received/, '1500-byte echo answered');

  t.equal(echoes.filter((e) => e.family === 4).length, 7, 'the batch reader saw every IPv4 request');
  t.equal(echoes.filter((e) => e.family === 6).length, 5, 'the batch reader saw every IPv6 request');
  t.same(
    echoes.filter((e) => e.family === 6).map((e) => e.seq),
    [1, 2, 3, 4, 5],
    'in order',
  );
});
