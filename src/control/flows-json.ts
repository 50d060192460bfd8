/**
 * A flow as JSON: the Clash/mihomo connection object (GET /connections)
 * and sluice's own, richer one (GET /v1/flows). Built only when asked for;
 * the flow table itself never formats anything.
 */
import type { RuleConfig } from '../config/types.js';
import type { FlowRecord } from '../engine/flow-registry.js';
import { ruleOfFlow, sluiceRuleText } from './rule-text.js';

/** mihomo's dnsMode names: fake-ip, redir-host (an address mapped back to a name by DNS), normal. */
function dnsMode(f: FlowRecord): string {
  return f.nameFrom === 'fake-ip' ? 'fake-ip' : f.nameFrom === 'dns' ? 'redir-host' : 'normal';
}

export function clashConnection(f: FlowRecord, rules: readonly RuleConfig[]): Record<string, unknown> {
  const rule = ruleOfFlow(rules, f.rule, f.mode);
  return {
    id: f.id,
    metadata: {
      network: f.network,
      type: f.inbound === 'tun' ? 'Tun' : 'TProxy',
      sourceIP: f.srcIp,
      destinationIP: f.dstIp,
      // Ports are strings in the Clash API (mihomo constant/metadata.go).
      sourcePort: String(f.srcPort),
      destinationPort: String(f.dstPort),
      inboundIP: '',
      inboundPort: '',
      inboundName: f.inbound,
      inboundUser: '',
      inbound: f.inbound,
      host: f.domain ?? '',
      dnsMode: dnsMode(f),
      uid: f.uid ?? 0,
      process: f.process ?? '',
      processPath: f.processPath ?? '',
      specialProxy: '',
      specialRules: '',
      remoteDestination: f.remoteDestination ?? '',
      dscp: 0,
      sniffHost: f.sniffHost ?? '',
      sourceGeoIP: null,
      destinationGeoIP: null,
      sourceIPASN: '',
      destinationIPASN: '',
    },
    upload: f.bytes?.bytesUp ?? 0,
    download: f.bytes?.bytesDown ?? 0,
    start: new Date(f.started).toISOString(),
    chains: f.chains ?? [f.outbound === '' ? 'DIRECT' : f.outbound],
    rule: rule.type,
    rulePayload: rule.payload,
  };
}

export function sluiceFlow(f: FlowRecord, rules: readonly RuleConfig[], now: number): Record<string, unknown> {
  return {
    id: f.id,
    network: f.network,
    inbound: f.inbound,
    srcIp: f.srcIp,
    srcPort: f.srcPort,
    dstIp: f.dstIp,
    dstPort: f.dstPort,
    domain: f.domain,
    nameFrom: f.nameFrom,
    sniffHost: f.sniffHost,
    protocol: f.protocol,
    rule: f.rule,
    ruleText: sluiceRuleText(rules, f.rule, f.mode),
    mode: f.mode ?? 'rule',
    outbound: f.outbound,
    chains: f.chains ?? [f.outbound],
    remoteDestination: f.remoteDestination,
    uid: f.uid,
    process: f.process,
    processPath: f.processPath,
    startedAt: new Date(f.started).toISOString(),
    ageMs: now - f.started,
    bytesUp: f.bytes?.bytesUp ?? 0,
    bytesDown: f.bytes?.bytesDown ?? 0,
  };
}
