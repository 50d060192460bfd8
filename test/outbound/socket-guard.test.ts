/**
 * Every socket sluice opens must carry route.mark (issue 12, item 6), and
 * the way to guarantee it is that sockets come from one place: the marked
 * socket factory (src/link/sockets.ts), the dialer (src/outbound/dial.ts)
 * and the undici Agent factory that dials through an outbound
 * (src/outbound/agent.ts). This test reads src/ and fails when a call that
 * makes a socket, an undici dispatcher or a system DNS lookup appears
 * anywhere else, so a new one cannot be added without deciding here, with
 * a reason, why it is safe. (The namespace test test/system/marks.test.ts
 * checks the sockets of a running sluice with ss.)
 */
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SRC = path.resolve(here, '../../../src');

/** What makes a socket (or a connection pool, or asks the host's resolver). */
const MAKERS: [string, RegExp][] = [
  ['net.connect', /\bnet\.(connect|createConnection)\(/],
  ['new net.Socket', /\bnew net\.Socket\(/],
  ['dgram.createSocket', /\bdgram\.createSocket\(/],
  ['native createSocket', /\bcreateSocket\(\{/],
  ['tls.connect', /\btls\.connect\(/],
  ['undici dispatcher', /\bnew (Agent|Pool|Client|ProxyAgent|EnvHttpProxyAgent)\(/],
  // Imported, or taken from the lazily loaded module (src/outbound/undici.ts).
  ['undici request without a dispatcher', /^import \{[^}]*\b(request|fetch|stream|pipeline)\b[^}]*\} from 'undici'|\{[^}]*\b(request|fetch|stream|pipeline)\b[^}]*\} = undici\(\)/m],
  ['fetch / http(s).request', /(^|[^.\w])fetch\(|\bhttps?\.(request|get)\(/],
  ['system resolver', /\bdns\.(promises\.)?(lookup|resolve\w*)\(/],
];

/** file -> the makers it may use, and why that is safe. */
const ALLOWED: Record<string, { makers: string[]; why: string }> = {
  'link/sockets.ts': { makers: ['new net.Socket', 'dgram.createSocket', 'native createSocket'], why: 'the marked socket factory itself (SO_MARK / SO_BINDTODEVICE set natively) and the TPROXY listener' },
  'outbound/dial.ts': { makers: ['net.connect', 'dgram.createSocket', 'system resolver'], why: 'the dialer: plain sockets only when neither a mark nor an interface is configured (never with route.auto, which gives every outbound route.mark); the system lookup only when the caller gives none (the engine always gives its own chain)' },
  'outbound/agent.ts': { makers: ['undici dispatcher', 'tls.connect'], why: 'the one Agent factory: every connection is outbound.connectTcp, TLS runs over that stream (socket: raw)' },
  'outbound/http-connect.ts': { makers: ['undici dispatcher'], why: "one Client per CONNECT tunnel, its connect hook is the dialer's dialTcp" },
  'outbound/http-get.ts': { makers: ['tls.connect'], why: "health checks and rule-set downloads: TLS over the outbound's own connectTcp stream (socket: raw), so the marked dialer made the socket" },
  'control/delay.ts': { makers: ['tls.connect'], why: "the API's delay test: TLS over the outbound's own connectTcp stream, so the marked dialer made the socket" },
  'control/client.ts': { makers: ['fetch / http(s).request'], why: "the CLI's client of the local control API (loopback or a unix socket, which the local routing table answers before any TUN route); runs in the `sluice status/flows/close/reload/explain` process, never inside `sluice run`" },
  'commands/capture.ts': { makers: ['fetch / http(s).request'], why: '`sluice capture` streams /v1/capture from the local control API (loopback or a unix socket), in its own process' },
  'engine/http-l7.ts': { makers: ['undici dispatcher'], why: 'the L7 Pool per origin, its connect hook is outbound.connectTcp' },
  'outbound/transparent-dial.ts': { makers: ['native createSocket', 'new net.Socket'], why: "preserveSource: an IP_TRANSPARENT socket carrying the direct outbound's mark" },
  'udp/tproxy.ts': { makers: ['native createSocket', 'dgram.createSocket'], why: 'TPROXY UDP: the transparent listener and the per-session reply sockets toward the LAN client (LAN side, never an upstream; the reply sockets carry route.mark under route.auto)' },
  'dns/resolver.ts': {
    makers: ['net.connect', 'dgram.createSocket', 'undici request without a dispatcher'],
    why: 'library defaults used only when no factory is given; the engine (src/engine/dns-upstreams.ts) always passes the outbound\'s factories and a dialingAgent, and `sluice run` makes undici\'s global dispatcher refuse',
  },
};

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Source without comments, so a doc comment naming `net.connect(` does not count. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

t.test('sockets are made only by the marked factories (and the listed, reasoned exceptions)', async (t) => {
  const files = walk(SRC);
  t.ok(files.length > 50, `scanned ${files.length} files under src/`);
  const found = new Map<string, Set<string>>();
  for (const f of files) {
    const rel = path.relative(SRC, f).split(path.sep).join('/');
    const src = code(readFileSync(f, 'utf8'));
    for (const [name, re] of MAKERS) {
      if (!re.test(src)) continue;
      if (!found.has(rel)) found.set(rel, new Set());
      found.get(rel)!.add(name);
      const allowed = ALLOWED[rel];
      t.ok(allowed?.makers.includes(name), `${rel}: ${name}${allowed?.makers.includes(name) ? ` (${allowed.why})` : ' outside the marked dialer: dial through src/outbound/dial.ts, src/link/sockets.ts or dialingAgent() in src/outbound/agent.ts, or add a reasoned exception here'}`);
    }
  }
  // The list stays honest: every exception is still needed.
  for (const [rel, a] of Object.entries(ALLOWED)) {
    for (const m of a.makers) t.ok(found.get(rel)?.has(m), `exception ${rel}: ${m} is still used (else remove it from the list)`);
  }
});

t.test('the guard sees what it guards against', async (t) => {
  const samples: Record<string, string> = {
    'net.connect': "const s = net.connect({ host, port });",
    'undici dispatcher': 'const a = new Agent();',
    'undici request without a dispatcher': "import { request } from 'undici';",
    'fetch / http(s).request': 'await fetch(url);',
    'system resolver': 'await dns.promises.lookup(host);',
    'dgram.createSocket': "dgram.createSocket('udp4')",
  };
  for (const [name, sample] of Object.entries(samples)) {
    const re = MAKERS.find(([n]) => n === name)![1];
    t.ok(re.test(code(sample)), `${name} is caught in ${JSON.stringify(sample)}`);
  }
  const lazy = 'const { request } = undici();';
  t.ok(MAKERS.find(([n]) => n === 'undici request without a dispatcher')![1].test(code(lazy)), `undici request without a dispatcher is caught in ${JSON.stringify(lazy)}`);
  t.notOk(MAKERS.some(([, re]) => re.test(code('/** uses net.connect({}) */\n// new Agent()\n'))), 'comments do not count');
});
