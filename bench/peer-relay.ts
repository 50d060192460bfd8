/**
 * The "bare Node relay" row of the peer benchmark (bench/peers.bench.ts):
 * the least a Node.js program can do to carry TCP between two hosts,
 * `net` plus `pipe`, nothing else. In the gateway namespace nftables
 * redirects the client's connections to these listeners; each accepted
 * connection is piped to the same port on TARGET and back. Half-close is
 * passed through (allowHalfOpen on both sides, `pipe` ends the other side
 * when one side ends), an error on either side destroys both.
 *
 *   node dist/bench/peer-relay.js TARGET PORT [PORT...]
 *
 * Prints {"event":"ready"} once every port listens; ends on SIGTERM.
 */
import net from 'node:net';

const [target, ...portArgs] = process.argv.slice(2);
const ports = portArgs.map(Number);
if (target === undefined || net.isIP(target) === 0 || ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
  console.error('usage: peer-relay.js TARGET-IP PORT [PORT...]');
  process.exit(2);
}

function relay(port: number, client: net.Socket): void {
  const upstream = net.connect({ host: target, port, allowHalfOpen: true });
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
  client.pipe(upstream);
  upstream.pipe(client);
}

let listening = 0;
for (const port of ports) {
  net
    .createServer({ allowHalfOpen: true }, (client) => relay(port, client))
    .listen({ port, backlog: 4096 }, () => {
      if (++listening === ports.length) console.log(JSON.stringify({ event: 'ready', target, ports }));
    });
}
process.once('SIGTERM', () => process.exit(0));
