/**
 * `sluice explain`: which rule decides a flow, the outbound it leads to, and
 * for every earlier rule the first condition that failed.
 *
 *   sluice explain --config FILE --dst ADDR:PORT [--domain NAME] [--src ADDR:PORT]
 *                  [--network tcp|udp] [--inbound tun|tproxy] [--protocol P] [--json]
 *     works offline from the configuration, without a running sluice;
 *   sluice explain ID [--json]
 *     asks the running sluice (GET /v1/flows/ID/explain, with the stored
 *     API secret) about a live flow, from the inputs the engine matched it on.
 *
 * Exit codes: 0 explained, 1 the configuration or the API failed, 2 usage error.
 */
import { parseArgs } from 'node:util';
import { isConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import type { SluiceConfig } from '../config/types.js';
import { compilePolicy } from '../engine/policy/compile.js';
import { parseIp } from '../engine/policy/cidr-trie.js';
import { PolicyExplainer, explainWithCheck, formatExplanation, outboundKindOf, policyInputOf, type PolicyExplanation } from '../engine/policy/explain.js';
import type { MatchContext, SniffedProtocol } from '../engine/policy/types.js';
import type { CommandIo } from './check.js';
import { ControlError, TARGET_USAGE, messageOf, request, resolveTarget, runControl, type TargetFlags } from '../control/client.js';

export const EXPLAIN_USAGE = `Usage:
  sluice explain --config FILE --dst ADDR:PORT [--domain NAME] [--src ADDR:PORT]
                 [--network tcp|udp] [--inbound tun|tproxy] [--protocol tls|http|quic|dns] [--json]
  sluice explain ID [--json] [--api HOST:PORT|PATH] [--secret TOKEN] [--secret-file FILE] [--config FILE]

Prints which rule decides the flow and the outbound it leads to, and for each
earlier rule the first condition that failed, e.g.
  rule 0 domainSuffix [example.com]: name unknown
The first form reads FILE and needs no running sluice (the name is the one
given with --domain). The second asks the running sluice about the live flow
ID (from \`sluice flows\` or GET /connections), with the name as the engine
learnt it (fake-IP mapping, snooped DNS answer, or sniffed); there --config
only says where the API is. Options of the second form:
${TARGET_USAGE}`;

/** `203.0.113.7:443` or `[2001:db8::1]:443` into address bytes and a port; null when malformed. */
export function parseAddrPort(text: string): { addr: Uint8Array; port: number } | null {
  let host: string;
  let port: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return null;
    host = text.slice(1, close);
    port = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0 || text.indexOf(':') !== colon) return null;
    host = text.slice(0, colon);
    port = text.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return null;
  const addr = parseIp(host);
  return addr === null ? null : { addr, port: Number(port) };
}

const NETWORKS = ['tcp', 'udp'] as const;
const INBOUNDS = ['tun', 'tproxy'] as const;
const PROTOCOLS = ['tls', 'http', 'quic', 'dns'] as const;

function oneOf<T extends string>(v: string | undefined, allowed: readonly T[], dflt: T | null, flag: string): T | null {
  if (v === undefined) return dflt;
  if ((allowed as readonly string[]).includes(v)) return v as T;
  throw new UsageError(`${flag} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
}

class UsageError extends Error {}

export async function runExplain(argv: string[], io: CommandIo = process): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        dst: { type: 'string' },
        src: { type: 'string' },
        domain: { type: 'string' },
        network: { type: 'string' },
        inbound: { type: 'string' },
        protocol: { type: 'string' },
        json: { type: 'boolean' },
        api: { type: 'string' },
        secret: { type: 'string' },
        'secret-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.stderr.write(`sluice explain: ${(err as Error).message}\n\n${EXPLAIN_USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    io.stdout.write(`${EXPLAIN_USAGE}\n`);
    return 0;
  }
  const json = values.json === true;
  try {
    if (positionals.length > 0) {
      if (positionals.length > 1 || values.dst !== undefined) throw new UsageError('give either a flow ID or --config FILE --dst ADDR:PORT, not both');
      const flags = { api: values.api, secret: values.secret, 'secret-file': values['secret-file'], config: values.config } as TargetFlags;
      return await runControl('explain', EXPLAIN_USAGE, io, () => explainLive(positionals[0]!, flags, json, io));
    }
    return await explainOffline(values, json, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`sluice explain: ${err.message}\n\n${EXPLAIN_USAGE}\n`);
      return 2;
    }
    throw err;
  }
}

async function explainOffline(values: Record<string, string | boolean | undefined>, json: boolean, io: CommandIo): Promise<number> {
  const file = values.config as string | undefined;
  if (file === undefined || file === '') throw new UsageError('--config FILE is required (or give the ID of a live flow)');
  const dstText = values.dst as string | undefined;
  if (dstText === undefined) throw new UsageError('--dst ADDR:PORT is required');
  const dst = parseAddrPort(dstText);
  if (dst === null) throw new UsageError(`--dst: expected ADDR:PORT (203.0.113.7:443 or [2001:db8::1]:443), got ${JSON.stringify(dstText)}`);
  const family = dst.addr.length === 16 ? 6 : 4;
  const notes: string[] = [];
  let src: { addr: Uint8Array; port: number } = { addr: new Uint8Array(family === 6 ? 16 : 4), port: 0 };
  const srcText = values.src as string | undefined;
  if (srcText !== undefined) {
    const s = parseAddrPort(srcText);
    if (s === null) throw new UsageError(`--src: expected ADDR:PORT, got ${JSON.stringify(srcText)}`);
    if (s.addr.length !== dst.addr.length) throw new UsageError('--src and --dst must be of the same address family');
    src = s;
  } else {
    notes.push(`no --src given: the source was taken as ${family === 6 ? '[::]:0' : '0.0.0.0:0'}`);
  }
  const domainText = values.domain as string | undefined;
  if (domainText !== undefined && domainText.trim() === '') throw new UsageError('--domain must not be empty');
  const ctx: MatchContext = {
    network: oneOf(values.network as string | undefined, NETWORKS, 'tcp', '--network')!,
    inbound: oneOf(values.inbound as string | undefined, INBOUNDS, 'tun', '--inbound')!,
    family,
    dst: dst.addr,
    dstPort: dst.port,
    src: src.addr,
    srcPort: src.port,
    domain: domainText ?? null,
    protocol: oneOf<SniffedProtocol>(values.protocol as string | undefined, PROTOCOLS, null, '--protocol'),
  };

  let config: SluiceConfig;
  try {
    config = await loadConfig(file);
  } catch (err) {
    if (!isConfigError(err)) throw err;
    io.stderr.write(`${err.message}\nsluice explain: ${file} has problems; run \`sluice check --config ${file}\`\n`);
    return 1;
  }
  const input = policyInputOf(config);
  const explainer = new PolicyExplainer(input);
  const { explanation, notes: checkNotes } = explainWithCheck(explainer, compilePolicy(input), ctx, 'command-line');
  notes.push(...checkNotes);
  print(explanation, notes, outboundKindOf(config), json, io);
  return 0;
}

function print(e: PolicyExplanation, notes: string[], kind: ((name: string) => string | null) | undefined, json: boolean, io: CommandIo): void {
  if (json) io.stdout.write(`${JSON.stringify({ ...e, notes })}\n`);
  else io.stdout.write(`${formatExplanation(e, { notes, ...(kind ? { outboundKind: kind } : {}) })}\n`);
}

async function explainLive(id: string, flags: TargetFlags, json: boolean, io: CommandIo): Promise<number> {
  const target = await resolveTarget(flags);
  const r = await request(target, 'GET', `/v1/flows/${encodeURIComponent(id)}/explain`);
  const body = r.body as { message?: string; text?: string; explanation?: PolicyExplanation; notes?: string[] } | null;
  if (r.status !== 200 || body === null || body.explanation === undefined) {
    const why = r.status === 404 ? `no open flow with id ${id} (see sluice flows)` : `${r.status} ${messageOf(r.body) ?? r.text.slice(0, 200)}`;
    throw new ControlError(why, r.status);
  }
  if (json) io.stdout.write(`${JSON.stringify({ id, ...body.explanation, notes: body.notes ?? [] })}\n`);
  else io.stdout.write(`flow ${id}\n${body.text ?? formatExplanation(body.explanation, { notes: body.notes ?? [] })}\n`);
  return 0;
}
