/**
 * How the engine builds its DNS upstreams (src/engine/dns-upstreams.ts):
 * a direct DoH upstream given by host name needs a bootstrap (dns.bootstrap,
 * dns.hostsFile or a direct plain upstream) and is refused at start, naming the field,
 * without one; and `refuseGlobalDispatch` (what `sluice run` installs)
 * makes any undici request without a dispatcher fail instead of opening an
 * unmarked socket.
 */
import t from 'tap';
import { request } from 'undici';
import { defaultConfig } from '../../src/config/types.js';
import { buildResolverChain } from '../../src/engine/dns-upstreams.js';
import { createOutbounds } from '../../src/outbound/index.js';
import { refuseGlobalDispatch } from '../../src/outbound/agent.js';

const outbounds = createOutbounds([{ name: 'direct', type: 'direct' }, { name: 'proxy', type: 'socks5', server: '192.0.2.1', port: 1080 }]);
const dns = (upstreams: { address: string; outbound: string }[], bootstrap: string[] = [], hostsFile: string | null = null) => ({ ...defaultConfig().dns, upstreams, bootstrap, hostsFile });

t.test('a DoH upstream by host name needs a bootstrap', async (t) => {
  t.throws(() => buildResolverChain(dns([{ address: 'https://doh.example/dns-query', outbound: 'direct' }]), outbounds), {
    code: 'SLUICE_ENGINE_SETUP',
    message: /^dns\.upstreams\[0\]\.address: the DoH host doh\.example needs a plain DNS server to resolve it: add dns\.bootstrap/,
  });
  t.ok(buildResolverChain(dns([{ address: 'https://doh.example/dns-query', outbound: 'direct' }], ['udp://192.0.2.53:53']), outbounds), 'dns.bootstrap given: fine');
  t.ok(buildResolverChain(dns([{ address: 'https://doh.example/dns-query', outbound: 'direct' }], [], '/etc/hosts'), outbounds), 'dns.hostsFile given: fine');
  t.ok(buildResolverChain(dns([{ address: 'https://doh.example/dns-query', outbound: 'direct' }, { address: 'udp://192.0.2.53:53', outbound: 'direct' }]), outbounds), 'a direct plain upstream bootstraps it');
  t.ok(buildResolverChain(dns([{ address: 'https://192.0.2.53/dns-query', outbound: 'direct' }]), outbounds), 'an IP literal needs none');
  t.ok(buildResolverChain(dns([{ address: 'https://doh.example/dns-query', outbound: 'proxy' }]), outbounds), 'through a proxy the proxy resolves the name');
});

t.test('the refusing global dispatcher', async (t) => {
  refuseGlobalDispatch();
  await t.rejects(request('http://127.0.0.1:9/'), { code: 'SLUICE_UNMARKED_DISPATCH', message: /global dispatcher/ }, 'a request without a dispatcher fails');
  // Node's built-in fetch keeps its own dispatcher on this Node version; test/outbound/socket-guard.test.ts forbids fetch( in src/.
});
