/**
 * DNS-over-HTTPS through a proxy outbound: undici's connections are made
 * through SOCKS5 (microsocks) and TLS runs inside the tunnel to a DoH
 * server (node:http2 with a private certificate) that forwards to dnsmasq.
 */
import t from 'tap';
import { outboundDispatcher } from '../../src/engine/dns-upstreams.js';
import { createResolver } from '../../src/dns/resolver.js';
import { UdpResolver } from '../../src/dns/resolver.js';
import { buildQuery, parseMessage } from '../../src/dns/message.js';
import { createOutbound } from '../../src/outbound/index.js';
import { dohServer, startDnsmasq } from '../dns/servers.js';
import { freePort, startMicrosocks } from '../outbound/servers.js';

t.test('DoH upstream through a SOCKS5 outbound', async (t) => {
  const dm = await startDnsmasq(t);
  const seen: { method: string; type: string; id: number; alpn: string }[] = [];
  const { url, ca } = await dohServer(t, new UdpResolver({ host: '127.0.0.1', port: dm.port }), seen);
  const socks = await startMicrosocks(t);
  const proxy = createOutbound({ name: 'proxy', type: 'socks5', server: '127.0.0.1', port: socks.port });
  const dispatcher = outboundDispatcher(proxy, { ca });
  t.teardown(() => dispatcher.close());
  const resolver = createResolver(`${url}/dns-query`, { dispatcher });
  const answer = parseMessage(await resolver.query(buildQuery({ id: 7, name: 'doh.example.test', type: 1, rd: true })))!;
  t.same(answer.answers.map((a) => a.address), ['192.0.2.10'], 'answered through the tunnel');
  t.equal(seen.length, 1, 'the DoH server saw one POST');

  // The same through a proxy that is not there: the query fails, so the
  // dispatcher really dials through the outbound and not around it.
  const dead = createOutbound({ name: 'dead', type: 'socks5', server: '127.0.0.1', port: await freePort() });
  const deadDispatcher = outboundDispatcher(dead, { ca });
  t.teardown(() => deadDispatcher.close());
  await t.rejects(createResolver(`${url}/dns-query`, { dispatcher: deadDispatcher }).query(buildQuery({ id: 8, name: 'doh.example.test', type: 1, rd: true })));
  t.equal(seen.length, 1, 'nothing reached the DoH server around the dead proxy');
});
