/**
 * One flow's record as the flow router keeps it (FlowInfo: the registry's
 * record plus the router's own fields), the flow's two ends, and the small
 * helpers that fill a record: its name, its chain through groups, what
 * sniffing read.
 */
import { isIP } from 'node:net';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { unmapAddress } from '../outbound/transparent-dial.js';
import { DIALLED_V4 } from '../outbound/dial.js';
import type { SniffedProtocol } from './policy/types.js';
import type { FlowRecord, NameOrigin } from './flow-registry.js';
import type { FlowGuard } from './flow-guard.js';
import { parseIp } from '../wire/ip-address.js';
import type { FlowAddressBytes } from '../ip/flow-addresses.js';
import type { TcpFlowRequest } from '../tcp/forwarder.js';
import type { FlowSniffer } from './sniff/index.js';
import type { MatchSeen } from './match-seen.js';
import type { FlowRelay } from './flow-relay.js';

/**
 * One flow as the engine tracks it: the registry's record (id, ends, name,
 * rule, outbound, live counters, `end` which ends it at its current stage:
 * pending dial, sniffing, relaying) plus what only the engine needs.
 * inbound tun: from the userspace stack; tproxy: accepted by a TPROXY listener (gateway mode).
 */
export interface FlowInfo extends FlowRecord {
  /** "ip:port" / "[v6]:port" for the log lines, made when read (FLOW_ENDS_TEXT). */
  readonly src: string;
  readonly dst: string;
  /** The outbounds a group flow went through, outermost first (group -> member -> ... -> leaf), for the flow line; null for a plain outbound. */
  chain: readonly string[] | null;
  /** Ends the flow should its handling throw. */
  guard: FlowGuard;
  /** Set by endFlows(): the flow line says close "shutdown". */
  shutdown: boolean;
  /** While relaying TCP (relay.ts shutdownRelay) or serving an HTTP L7 client (HttpL7.closeOrderly), sniffing or dialling (relay.ts closeUnrelayed): closes the flow with FINs; false when it cannot; endFlows() tries it before `end`. */
  closeOrderly: (() => boolean) | null;
  logged: boolean;
  /** Of what the policy was asked, what the record does not hold, and where the name came from then (set when routed), for `sluice explain ID` (match-seen.ts). */
  match: MatchSeen | null;
  /**
   * A TUN TCP flow's request while its SYN waits for the decision, the
   * client's stream and the upstream once they exist: what `end`,
   * `closeOrderly` and a failure (`destroy`, the guard's closer) act on,
   * through functions every flow shares rather than closures per flow
   * (issue 10: idle flows).
   */
  request: TcpFlowRequest | null;
  client: FlowRelay | null;
  upstream: Duplex | null;
  /** The flow log's sniffer of a relayed flow routed before its first bytes (made on its first chunk). */
  sniffer: FlowSniffer | null;
  /** Tears down what the fields above hold: an undecided request is reset, the streams destroyed. */
  destroy(): void;
}

/**
 * FlowInfo's prototype: its "ip:port" texts are made from its ends when a
 * log line or an error reads them, not kept by every flow (issue 10: 64
 * bytes per idle flow), as a worker flow's mirror does (mirror-flow.ts).
 */
export const FLOW_ENDS_TEXT = {
  get src(): string {
    const f = this as unknown as FlowRecord;
    return hostPort(f.srcIp, f.srcPort);
  },
  get dst(): string {
    const f = this as unknown as FlowRecord;
    return hostPort(f.dstIp, f.dstPort);
  },
};

/** FlowInfo.destroy (one function for every flow): the request is reset if still undecided, the upstream and the client destroyed. */
export function destroyFlow(this: FlowInfo): void {
  const req = this.request;
  try {
    if (req !== null && !req.decided) req.reset();
  } catch {
    // Expired meanwhile (SLUICE_FLOW_EXPIRED): nothing left to reset.
  }
  this.upstream?.destroy();
  this.client?.destroy();
}

/**
 * The two ends of a flow as the client sees it (local = the destination it
 * asked for): the bytes route and match it, the text is for the logs, the
 * API and the socket calls. TUN flows bring both from the stack; a TPROXY
 * TCP socket's text is converted once (addressBytes).
 */
export interface FlowEnds extends FlowAddressBytes {
  family: number;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
}

/** The address a kernel socket is connected to (a direct outbound's); null for a proxy's tunnel stream. */
export function remoteOf(upstream: Duplex): string | null {
  const dialled = (upstream as Duplex & { [DIALLED_V4]?: string })[DIALLED_V4];
  if (dialled !== undefined) return dialled;
  const a = (upstream as Partial<net.Socket>).remoteAddress;
  return typeof a === 'string' ? unmapAddress(a) : null;
}

/** Where hostPort builds its text: "[" + 45 characters of IPv6 + "]:" + 5 digits fit. */
const HOST_PORT = Buffer.alloc(64);
const HOST_PORT_MAX_ADDRESS = 45;

/**
 * "ip:port" or "[v6]:port", as one flat string: a template literal makes a
 * rope of three strings (~96 bytes for an IPv4 end), kept by every flow
 * for its log line (issue 10: idle flows).
 */
export function hostPort(address: string, port: number): string {
  const n = address.length;
  if (n > HOST_PORT_MAX_ADDRESS || !Number.isInteger(port) || port < 0 || port > 65535) return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  const b = HOST_PORT;
  const v6 = address.includes(':');
  let o = 0;
  if (v6) b[o++] = 0x5b;
  for (let i = 0; i < n; i++) {
    const c = address.charCodeAt(i);
    if (c > 0x7e) return v6 ? `[${address}]:${port}` : `${address}:${port}`; // not address text: as it is
    b[o++] = c;
  }
  if (v6) b[o++] = 0x5d;
  b[o++] = 0x3a;
  if (port >= 10000) b[o++] = 0x30 + ((port / 10000) | 0);
  if (port >= 1000) b[o++] = 0x30 + (((port / 1000) | 0) % 10);
  if (port >= 100) b[o++] = 0x30 + (((port / 100) | 0) % 10);
  if (port >= 10) b[o++] = 0x30 + (((port / 10) | 0) % 10);
  b[o++] = 0x30 + (port % 10);
  return b.toString('latin1', 0, o);
}

/**
 * Address text from a Node socket to bytes, once per flow, for the ends of
 * a flow the stack did not see (a TPROXY TCP connection, a NAT datagram's
 * new source): 4 or 16 bytes, 16 zero bytes (::, never unicast) for text
 * that is no address.
 */
export function addressBytes(text: string): Uint8Array {
  return parseIp(text) ?? new Uint8Array(16);
}

/** The chain of a group flow: outermost first for the flow line, innermost first (Clash `chains`) for the registry. */
export function setChain(info: FlowInfo, chain: readonly string[] | undefined): void {
  if (chain === undefined) return;
  info.chain = chain;
  info.chains = [...chain].reverse();
}

/** The name found for a flow's destination at its start (fake-IP or snooped). */
export function setName(info: FlowInfo, domain: string | null, from: NameOrigin | null): void {
  info.domain = domain;
  info.nameFrom = domain === null ? null : from;
}

/** What sniffing read: kept as sniffHost, and as the flow's name when it had none. */
export function setSniffed(info: FlowInfo, protocol: SniffedProtocol, serverName: string | null): void {
  info.protocol = protocol;
  if (serverName === null || protocol === 'dns') return;
  info.sniffHost = serverName;
  if (isIP(serverName) === 0 && info.domain === null) {
    info.domain = serverName;
    info.nameFrom = 'sniff';
  }
}
