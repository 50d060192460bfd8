/**
 * Small programs the gateway-mode system tests run with `node -e` in their
 * namespaces: an echo server and a client holding one TCP flow open.
 */

/** UDP echo on 7000 and TCP echo on 7001 (both families); prints "ready" once all four listen. */
export const ECHO = `const d = require('dgram'), net = require('net'); let n = 0; const up = () => { if (++n === 4) console.log('ready'); };
for (const t of ['udp4', 'udp6']) { const s = d.createSocket({ type: t, ipv6Only: t === 'udp6' }); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(7000, up); }
for (const h of ['0.0.0.0', '::']) net.createServer((c) => { c.on('error', () => {}); c.pipe(c); }).listen({ port: 7001, host: h, ipv6Only: h === '::' }, up);`;

/**
 * A TCP flow held open: a line every 100 ms for argv[2] ms to port 7001 of
 * argv[1], each echoed back; waits `settleMs` for the last echoes, then
 * prints {sent, echoed, err}.
 */
export function holdProgram(settleMs: number): string {
  return `const net = require('net'); const c = net.connect(7001, process.argv[1]); let sent = 0, got = '', err = null;
c.on('error', (e) => { err = e.message; }); c.on('data', (d) => { got += d; });
c.on('connect', () => { console.log('connected'); const iv = setInterval(() => { if (err) return; c.write('line ' + (sent++) + '\\n'); }, 100);
setTimeout(() => { clearInterval(iv); setTimeout(() => { console.log(JSON.stringify({ sent, echoed: got.split('\\n').filter(Boolean).length, err })); process.exit(0); }, ${settleMs}); }, Number(process.argv[2])); });`;
}
