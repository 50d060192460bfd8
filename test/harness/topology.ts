/**
 * The standard three-namespace topology for integration tests and benches:
 *
 *   client ──veth── gateway ──veth── server
 *   192.0.2.2        192.0.2.1         203.0.113.2
 *   2001:db8:c::2    2001:db8:c::1     2001:db8:5::2
 *                    203.0.113.1
 *                    2001:db8:5::1
 *
 * The gateway forwards between the two sides. `steerIntoTun` adds policy
 * routing in the gateway so that everything arriving from the client side
 * is routed into a TUN device there (the "default gateway for VMs and
 * namespaces" use), while the gateway's own sockets (sluice's outbound
 * connections) use the main table and reach the server directly: no mark is
 * needed, so there can be no loop. Without it, the kernel routes client to
 * server: the baseline every benchmark compares against.
 */
import type { Lab, Netns } from './netns.js';

export const CLIENT_V4 = '192.0.2.2';
export const GATEWAY_LAN_V4 = '192.0.2.1';
export const GATEWAY_WAN_V4 = '203.0.113.1';
export const SERVER_V4 = '203.0.113.2';
export const CLIENT_V6 = '2001:db8:c::2';
export const GATEWAY_LAN_V6 = '2001:db8:c::1';
export const GATEWAY_WAN_V6 = '2001:db8:5::1';
export const SERVER_V6 = '2001:db8:5::2';

/** Routing table and rule priority the gateway uses for TUN steering (inside its namespace only). */
export const STEER_TABLE = 100;
export const STEER_PRIORITY = 1000;

export interface Topology {
  client: Netns;
  gateway: Netns;
  server: Netns;
}

export async function threeNamespaces(lab: Lab, opts: { mtu?: number } = {}): Promise<Topology> {
  const client = await lab.netns('client');
  const gateway = await lab.netns('gateway');
  const server = await lab.netns('server');
  const mtu = opts.mtu ?? 1500;
  await lab.veth(client, 'eth0', gateway, 'lan0', {
    a: [`${CLIENT_V4}/24`, `${CLIENT_V6}/64`],
    b: [`${GATEWAY_LAN_V4}/24`, `${GATEWAY_LAN_V6}/64`],
    mtu,
  });
  await lab.veth(gateway, 'wan0', server, 'eth0', {
    a: [`${GATEWAY_WAN_V4}/24`, `${GATEWAY_WAN_V6}/64`],
    b: [`${SERVER_V4}/24`, `${SERVER_V6}/64`],
    mtu,
  });
  // `ip -batch` takes no per-line -6: the family follows from the addresses.
  await client.ipBatch([`route add default via ${GATEWAY_LAN_V4}`, `route add ::/0 via ${GATEWAY_LAN_V6}`]);
  await server.ipBatch([`route add default via ${GATEWAY_WAN_V4}`, `route add ::/0 via ${GATEWAY_WAN_V6}`]);
  await gateway.sh('sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1');
  return { client, gateway, server };
}

/**
 * In the gateway, route everything that arrives on `lan0` into `tunName`
 * (which must exist and be up). IPv4 and IPv6.
 */
export async function steerIntoTun(gateway: Netns, tunName: string): Promise<void> {
  await gateway.ipBatch([
    `route add 0.0.0.0/0 dev ${tunName} table ${STEER_TABLE}`,
    `route add ::/0 dev ${tunName} table ${STEER_TABLE}`,
    `rule add from 0.0.0.0/0 iif lan0 lookup ${STEER_TABLE} priority ${STEER_PRIORITY}`,
  ]);
  // `ip rule` in a batch defaults to IPv4; the IPv6 rule needs `ip -6`.
  await gateway.exec(['ip', '-6', 'rule', 'add', 'from', '::/0', 'iif', 'lan0', 'lookup', String(STEER_TABLE), 'priority', String(STEER_PRIORITY)]);
  // The TUN answers as every destination; reverse-path filtering would drop
  // nothing here, but be explicit so a host default of strict rp_filter
  // cannot interfere inside the namespace.
  await gateway.sh(`sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.${tunName}.rp_filter=0 || true`);
}
