/**
 * The HTTP L7 mode's sans-IO parts: http.rules matching (method, path
 * prefix, path regex, Host suffix; first match wins), header rewriting
 * (hop-by-hop, Connection-listed, Expect, removeHeaders, setHeaders), and
 * the config section (defaults, schema, semantic checks with field paths).
 */
import t from 'tap';
import { compileHttpRules, filterResponseHeaders, hostOf, matchHttpRule, rewriteRequestHeaders } from '../../src/engine/http-rules.js';
import { parseConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/types.js';

const rules = compileHttpRules([
  { method: ['POST'], pathPrefix: '/api', outbound: 'corp', setHeaders: {}, removeHeaders: [] },
  { pathRegex: '^/img/.*\\.png(\\?|$)', outbound: 'socks', setHeaders: {}, removeHeaders: [] },
  { host: ['example.com'], outbound: null, setHeaders: { 'x-via': 'sluice' }, removeHeaders: ['cookie'] },
]);

t.test('rules: first match wins, conditions ANDed', async (t) => {
  const m = (method: string, target: string, host: string | null = null): number => matchHttpRule(rules, { method, target, host })?.index ?? -1;
  t.equal(m('POST', '/api/v1'), 0);
  t.equal(m('POST', '/api?x=1'), 0, 'query is not part of the path');
  t.equal(m('GET', '/api/v1'), -1, 'method must match too');
  t.equal(m('POST', '/apix'), 0, 'a prefix is a plain string prefix');
  t.equal(m('POST', '/x/api'), -1);
  t.equal(m('GET', '/img/a.png'), 1);
  t.equal(m('GET', '/img/a.png?v=2'), 1, 'the regex sees the query');
  t.equal(m('GET', '/', 'example.com'), 2);
  t.equal(m('GET', '/', 'www.example.com'), 2, 'host is a suffix match');
  t.equal(m('GET', '/', 'badexample.com'), -1, 'on label boundaries');
  t.equal(m('GET', '/', null), -1, 'no Host, no host match');
  t.equal(m('POST', '/api', 'example.com'), 0, 'earlier rule wins');
});

t.test('hostOf strips port and brackets and lower-cases', async (t) => {
  t.equal(hostOf('Example.COM:8080'), 'example.com');
  t.equal(hostOf('[2001:db8::1]:80'), '2001:db8::1');
  t.equal(hostOf('a.example'), 'a.example');
  t.equal(hostOf(undefined), null);
  t.equal(hostOf(''), null);
});

t.test('request headers: hop-by-hop dropped, rule applied', async (t) => {
  const raw = [
    'Host', 'example.com',
    'Connection', 'keep-alive, X-Private',
    'Keep-Alive', 'timeout=5',
    'X-Private', 'secret',
    'Cookie', 'a=1',
    'X-Via', 'client',
    'Transfer-Encoding', 'chunked',
    'TE', 'trailers',
    'Upgrade', 'h2c',
    'Expect', '100-continue',
    'Accept', '*/*',
  ];
  t.same(rewriteRequestHeaders(raw, null), ['Host', 'example.com', 'Cookie', 'a=1', 'X-Via', 'client', 'Accept', '*/*']);
  t.same(rewriteRequestHeaders(raw, rules[2]!), ['Host', 'example.com', 'Accept', '*/*', 'x-via', 'sluice'], 'cookie removed, x-via replaced');
});

t.test('response headers: hop-by-hop dropped, duplicates kept', async (t) => {
  t.same(
    filterResponseHeaders({ 'content-type': 'text/plain', connection: 'close, x-hop', 'x-hop': '1', 'keep-alive': 'timeout=5', 'set-cookie': ['a=1', 'b=2'], 'transfer-encoding': 'chunked' }),
    { 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] },
  );
});

t.test('config: http defaults, completion, and errors with field paths', async (t) => {
  t.same((await parseConfig('', 'c.yaml')).http, defaultConfig().http);
  t.same(defaultConfig().http, { enabled: false, ports: [80], rules: [], accessLog: true, maxHeaderBytes: 16384 });
  const cfg = await parseConfig(
    [
      'outbounds: [ { name: direct, type: direct }, { name: corp, type: http, server: 192.0.2.1, port: 3128 } ]',
      'http:',
      '  enabled: true',
      '  ports: [80, 8080]',
      '  rules:',
      '    - { method: [POST], pathPrefix: /api, outbound: corp }',
      '    - { host: [Example.COM], setHeaders: { X-Via: sluice }, removeHeaders: [Cookie] }',
      '',
    ].join('\n'),
    'c.yaml',
  );
  t.same(cfg.http, {
    enabled: true,
    ports: [80, 8080],
    rules: [
      { method: ['POST'], pathPrefix: '/api', outbound: 'corp', setHeaders: {}, removeHeaders: [] },
      { host: ['example.com'], outbound: null, setHeaders: { 'x-via': 'sluice' }, removeHeaders: ['cookie'] },
    ],
    accessLog: true,
    maxHeaderBytes: 16384,
  });

  const bad = [
    'sniff: { timeoutMs: 0 }',
    'http:',
    '  enabled: true',
    '  rules:',
    '    - { pathRegex: "(", outbound: nowhere }',
    '    - { setHeaders: { Content-Length: "5" } }',
    '    - { method: [get] }',
    '    - { pathPrefix: /x }',
    '  colour: blue',
    '',
  ].join('\n');
  const err = await parseConfig(bad, 'bad.yaml').then(
    () => null,
    (e: Error) => e.message,
  );
  t.ok(err !== null, 'the bad config is refused');
  t.match(err, /bad\.yaml:3:\d+: http\.enabled: the HTTP mode needs sniffing/);
  t.match(err, /http\.rules\[0\]\.pathRegex: invalid regular expression/);
  t.match(err, /http\.rules\[0\]\.outbound: names an undefined outbound "nowhere"/);
  t.match(err, /http\.rules\[1\]\.setHeaders\.Content-Length: .*cannot be set/);
  t.match(err, /http\.rules\[2\]\.method\[0\]: expected an upper-case method such as GET, got "get"/);
  t.match(err, /http\.rules\[3\]: an http rule needs outbound, setHeaders or removeHeaders/);
  t.match(err, /http\.colour: unknown key "colour"/);
});
