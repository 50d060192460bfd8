/**
 * What a flow keeps of the policy's question (FlowInfo.match, a worker
 * flow's mirror): only what its record does not hold already. The router
 * asks the policy with the flow's own ends and owner and with the name and
 * protocol it has at that moment (sniffing may fill them later); the
 * question is made again from the record when it is read (GET
 * /v1/flows/:id/explain) instead of being kept per flow (issue 10: ~160
 * bytes of context and wrapper for each of 10,000 idle flows).
 */
import type { FlowRecord, NameOrigin } from './flow-registry.js';
import type { MatchContext, SniffedProtocol } from './policy/types.js';
import { parseIp } from '../wire/ip-address.js';

export interface MatchSeen {
  domain: string | null;
  protocol: SniffedProtocol | null;
  nameFrom: NameOrigin | null;
}

/** The policy's question for flow `f`, as the router asked it: the ends' bytes are those of their texts. */
export function matchContextOf(f: FlowRecord, seen: MatchSeen): MatchContext {
  const family = f.dstIp.includes(':') ? 6 : 4;
  return {
    network: f.network,
    inbound: f.inbound,
    family,
    dst: parseIp(f.dstIp) ?? new Uint8Array(family === 6 ? 16 : 4),
    dstPort: f.dstPort,
    src: parseIp(f.srcIp) ?? new Uint8Array(family === 6 ? 16 : 4),
    srcPort: f.srcPort,
    domain: seen.domain,
    protocol: seen.protocol,
    uid: f.uid,
    process: f.process,
    processPath: f.processPath,
  };
}
