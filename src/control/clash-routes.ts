/**
 * The Clash/mihomo controller routes the dashboards (metacubexd, zashboard,
 * yacd-meta) call, with mihomo's JSON shapes
 * (/work/shared/reference/clash-api-and-metrics.md 1.2, 1.3, 2.3):
 * hello, version, configs (mode), connections (+ DELETE), rules with hit
 * counts, rule providers (rule sets), proxies and groups (+ delay tests),
 * DNS query, fake-IP flush, /storage. Routes only mihomo can serve answer
 * 501. The streams are in streams.ts.
 */
import { randomInt } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { buildQuery, DnsType, nameToLabels, parseMessage, type DnsRecord } from '../dns/message.js';
import type { RoutingMode } from '../engine/flow-registry.js';
import type { ControlContext } from './context.js';
import { DelayError, measureDelay, parseExpected, type StatusRanges } from './delay.js';
import { GLOBAL, type ProxyGroupInfo, type SelectError } from './groups.js';
import { ApiError, badRequest, intParam, notFound, readJson, readJsonObject, sendJson, sendNoContent } from './http-util.js';
import { clashLevelOf } from './log-hub.js';
import type { ApiRequest } from './router.js';
import { describeCondition } from './rule-text.js';
import type { ApiServer } from './server.js';
import { connectionsSnapshot } from './streams.js';

const MODES: readonly RoutingMode[] = ['rule', 'global', 'direct'];

/** The Clash type names of sluice's outbound kinds. */
const PROXY_TYPES: Record<string, string> = { direct: 'Direct', socks5: 'Socks5', http: 'Http', reject: 'Reject', drop: 'RejectDrop' };

/** Delay results kept per proxy (mihomo keeps 10). */
const HISTORY = 10;
/** /storage: keys and bytes per value (mihomo: 1 MiB a value); kept in memory only. */
const STORAGE_KEYS = 16;

interface DelayRecord {
  time: string;
  delay: number;
}

function selectError(e: SelectError): ApiError {
  return new ApiError(e.kind === 'not-group' ? 400 : 400, e.kind === 'not-group' ? `Must be a Selector: ${e.message}` : e.message);
}

export function registerClashRoutes(api: ApiServer, ctx: ControlContext): void {
  const { engine } = ctx;
  const history = new Map<string, DelayRecord[]>();
  const storage = new Map<string, string>();

  const record = (name: string, delay: number): void => {
    let h = history.get(name);
    if (h === undefined) {
      // Bounded by the outbounds and groups the config names (unknown names never get here).
      h = [];
      history.set(name, h);
    }
    h.push({ time: new Date().toISOString(), delay });
    if (h.length > HISTORY) h.shift();
  };

  const groupList = (): ProxyGroupInfo[] => ctx.groups.list();
  const findGroup = (name: string): ProxyGroupInfo | undefined => groupList().find((g) => g.name === name);

  const proxyObject = (name: string): Record<string, unknown> | null => {
    const o = engine.outboundMap.get(name);
    const base = { name, id: name, history: history.get(name) ?? [], extra: {}, alive: (history.get(name)?.at(-1)?.delay ?? 1) !== 0, tfo: false, mptcp: false, smux: false, uot: false, xudp: false, interface: '', 'routing-mark': 0, 'provider-name': '', 'dialer-proxy': '' };
    if (o !== undefined) return { ...base, type: PROXY_TYPES[o.type] ?? o.type, udp: o.supportsUdp === true };
    const g = findGroup(name);
    if (g === undefined) return null;
    return { ...base, type: g.type, udp: g.udp ?? true, all: g.all, ...(g.now !== null ? { now: g.now } : {}), hidden: g.hidden ?? false, icon: g.icon ?? '', ...(g.fixed !== undefined ? { fixed: g.fixed } : {}), ...(g.testUrl !== undefined ? { testUrl: g.testUrl } : {}) };
  };

  const delayParams = (req: ApiRequest): { url: URL; timeout: number; expected: StatusRanges | null } => {
    const raw = req.query.get('url');
    if (raw === null || raw === '') throw badRequest('query parameter url is required (an http:// or https:// URL)');
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw badRequest(`query parameter url: not a URL: ${JSON.stringify(raw.slice(0, 100))}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw badRequest('query parameter url: expected http:// or https://');
    const timeout = intParam(req.query, 'timeout', 1, 60_000, 5000);
    let expected: StatusRanges | null;
    try {
      expected = parseExpected(req.query.get('expected'));
    } catch (err) {
      throw badRequest(`query parameter expected: ${(err as Error).message}`);
    }
    return { url, timeout, expected };
  };

  /**
   * The delay through `name` (an outbound, or a group through its current
   * member); 0 recorded on failure. The result also feeds the groups'
   * health: `group`'s own record of member `name` for a group delay test,
   * else every group that has `name` as a member.
   */
  const delayOf = async (name: string, p: { url: URL; timeout: number; expected: StatusRanges | null }, group?: string): Promise<number> => {
    const leaf = ctx.groups.resolve?.(name) ?? (engine.outboundMap.has(name) ? name : null);
    const outbound = leaf === null ? undefined : engine.outboundMap.get(leaf);
    if (outbound === undefined) throw new DelayError(false, `${name} leads to no outbound`);
    try {
      const ms = await measureDelay(outbound, p.url, p.timeout, p.expected);
      record(name, ms);
      ctx.groups.recordDelay?.(name, ms, null, group);
      return ms;
    } catch (err) {
      record(name, 0);
      ctx.groups.recordDelay?.(name, null, (err as Error).message, group);
      throw err;
    }
  };

  // --- hello, version ----------------------------------------------------------
  // "clash", as sing-box answers: yacd looks for exactly that to find an API on its own origin.
  api.route('GET', '/', (_req, res) => sendJson(res, 200, { hello: 'clash' }), { public: true });
  api.route('GET', '/version', (_req, res) => sendJson(res, 200, { version: `sluice ${ctx.version}`, meta: true }));

  // --- configs -------------------------------------------------------------------
  api.route('GET', '/configs', (_req, res) => {
    const c = ctx.config();
    sendJson(res, 200, {
      port: 0,
      'socks-port': 0,
      'redir-port': 0,
      'tproxy-port': c.gateway.enabled && c.gateway.mode === 'tproxy' ? c.gateway.tproxyPort : 0,
      'mixed-port': 0,
      tun: { enable: true, device: c.tun.name, stack: 'sluice', 'dns-hijack': c.dns.hijack ? ['any:53'] : [], 'auto-route': c.route.auto, 'auto-detect-interface': false, mtu: c.tun.mtu },
      'allow-lan': c.gateway.enabled,
      'bind-address': '*',
      mode: engine.mode,
      'mode-list': ['Rule', 'Global', 'Direct'],
      modes: MODES,
      'log-level': clashLevelOf(c.log.level),
      ipv6: true,
      'interface-name': '',
      'routing-mark': c.route.auto ? c.route.mark : 0,
      sniffing: c.sniff.timeoutMs > 0,
      'tcp-concurrent': false,
      'find-process-mode': 'off',
      'unified-delay': false,
      'geodata-mode': false,
    });
  });
  api.route('PATCH', '/configs', async (req, res) => {
    const body = await readJsonObject(req.raw);
    let mode: RoutingMode | null = null;
    for (const [key, value] of Object.entries(body)) {
      if (key === 'mode') {
        const m = typeof value === 'string' ? (value.toLowerCase() as RoutingMode) : null;
        if (m === null || !MODES.includes(m)) throw badRequest(`mode: expected one of rule, global, direct, got ${JSON.stringify(value)}`);
        mode = m;
      } else {
        throw badRequest(`${key}: sluice cannot change this while running; edit the config file and restart (only mode can be patched)`);
      }
    }
    if (mode !== null) {
      try {
        engine.setMode(mode);
      } catch (err) {
        throw badRequest((err as Error).message);
      }
    }
    sendNoContent(res);
  });
  // PUT /configs with an empty path (zashboard: ?reload=true) reloads what SIGHUP reloads.
  api.route('PUT', '/configs', async (req, res) => {
    const body = await readJson(req.raw);
    const b = body === undefined ? {} : body;
    if (b === null || typeof b !== 'object' || Array.isArray(b)) throw badRequest('Body invalid: expected a JSON object');
    const { path, payload } = b as { path?: unknown; payload?: unknown };
    if (typeof payload === 'string' && payload !== '') throw new ApiError(501, 'not supported by sluice: a config cannot be pushed as text; edit the config file and reload');
    if (typeof path === 'string' && path !== '' && path !== ctx.configName) throw new ApiError(501, `not supported by sluice: it runs ${ctx.configName} and reloads only that`);
    const r = await ctx.reload();
    if (!r.ok) throw badRequest(`reload failed: ${r.errors.join('; ')}`);
    sendNoContent(res);
  });

  // --- connections -----------------------------------------------------------
  api.route('GET', '/connections', (_req, res) => sendJson(res, 200, connectionsSnapshot(ctx)));
  api.route('DELETE', '/connections', (_req, res) => {
    engine.flows.closeAll();
    sendNoContent(res);
  });
  api.route('DELETE', '/connections/:id', (req, res) => {
    if (!engine.flows.close(req.params.id!)) throw notFound(`no open connection with id ${req.params.id!}`);
    sendNoContent(res);
  });

  // --- rules and rule providers ------------------------------------------------------
  api.route('GET', '/rules', (_req, res) => {
    const c = ctx.config();
    const hits = engine.ruleHitCounts();
    const extra = (i: number): Record<string, unknown> => ({ disabled: false, hitCount: hits[i]?.hits ?? 0, hitAt: hits[i]?.lastAt ? new Date(hits[i]!.lastAt).toISOString() : '', missCount: 0, missAt: '' });
    const rules = c.rules.map((r, i) => ({ index: i, ...describeCondition(r), proxy: r.outbound, size: -1, extra: extra(i) }));
    rules.push({ index: c.rules.length, type: 'Match', payload: '', proxy: c.final, size: -1, extra: extra(c.rules.length) });
    sendJson(res, 200, { rules });
  });
  const provider = (s: ReturnType<typeof engine.ruleSetStates>[number]): Record<string, unknown> => ({
    name: s.name,
    type: 'Rule',
    behavior: s.type === 'domain' ? 'Domain' : s.type === 'cidr' ? 'IPCIDR' : 'Classical',
    format: 'TextRule',
    vehicleType: s.url !== null ? 'HTTP' : s.path === null ? 'Inline' : 'File',
    ruleCount: s.entries,
    updatedAt: new Date(s.loadedAt).toISOString(),
    ...(s.path !== null ? { path: s.path } : {}),
  });
  api.route('GET', '/providers/rules', (_req, res) => sendJson(res, 200, { providers: Object.fromEntries(engine.ruleSetStates().map((s) => [s.name, provider(s)])) }));
  api.route('GET', '/providers/rules/:name', (req, res) => {
    const s = engine.ruleSetStates().find((x) => x.name === req.params.name);
    if (s === undefined) throw notFound(`no rule set named ${req.params.name!}`);
    sendJson(res, 200, provider(s));
  });
  api.route('PUT', '/providers/rules/:name', async (req, res) => {
    const name = req.params.name!;
    if (!engine.ruleSetStates().some((x) => x.name === name)) throw notFound(`no rule set named ${name}`);
    const r = await engine.reloadRuleSet(name);
    if (!r.ok) throw badRequest(`rule set ${name} not reloaded: ${r.errors.join('; ')}`);
    sendNoContent(res);
  });

  // --- proxies and groups ------------------------------------------------------------
  api.route('GET', '/proxies', (_req, res) => {
    const proxies: Record<string, unknown> = {};
    for (const name of engine.outboundMap.keys()) proxies[name] = proxyObject(name);
    for (const g of groupList()) proxies[g.name] = proxyObject(g.name);
    sendJson(res, 200, { proxies });
  });
  api.route('GET', '/proxies/:name', (req, res) => {
    const p = proxyObject(req.params.name!);
    if (p === null) throw notFound(`no proxy or group named ${req.params.name!}`);
    sendJson(res, 200, p);
  });
  api.route('PUT', '/proxies/:name', async (req, res) => {
    const name = req.params.name!;
    if (proxyObject(name) === null) throw notFound(`no proxy or group named ${name}`);
    // metacubexd sends this without a JSON Content-Type: readJson parses whatever it says.
    const body = await readJsonObject(req.raw);
    if (typeof body.name !== 'string' || body.name === '') throw badRequest('Body invalid: expected {"name": "<member>"}');
    if (findGroup(name) === undefined) throw badRequest(`Must be a Selector: ${name} is an outbound, not a group`);
    const err = ctx.groups.select(name, body.name);
    if (err !== null) throw selectError(err);
    sendNoContent(res);
  });
  api.route('DELETE', '/proxies/:name', (req, res) => {
    const name = req.params.name!;
    if (proxyObject(name) === null) throw notFound(`no proxy or group named ${name}`);
    if (findGroup(name) === undefined) throw badRequest(`${name} is an outbound, not a group`);
    const err = ctx.groups.unfix?.(name) ?? { kind: 'not-selectable' as const, message: `${name} has no pin to release` };
    if (err !== null) throw selectError(err);
    sendNoContent(res);
  });
  api.route('GET', '/proxies/:name/delay', async (req, res) => {
    const name = req.params.name!;
    if (proxyObject(name) === null) throw notFound(`no proxy or group named ${name}`);
    const p = delayParams(req);
    try {
      sendJson(res, 200, { delay: await delayOf(name, p) });
    } catch (err) {
      if (err instanceof DelayError && err.timeout) throw new ApiError(504, 'Timeout');
      throw new ApiError(503, `An error occurred in the delay test: ${(err as Error).message}`);
    }
  });
  api.route('GET', '/group', (_req, res) => sendJson(res, 200, { proxies: groupList().map((g) => proxyObject(g.name)) }));
  api.route('GET', '/group/:name', (req, res) => {
    if (findGroup(req.params.name!) === undefined) throw notFound(`no group named ${req.params.name!}`);
    sendJson(res, 200, proxyObject(req.params.name!));
  });
  api.route('GET', '/group/:name/delay', async (req, res) => {
    const g = findGroup(req.params.name!);
    if (g === undefined) throw notFound(`no group named ${req.params.name!}`);
    const p = delayParams(req);
    const out: Record<string, number> = {};
    // Every member at once, each within the timeout; a failed member is left out (as mihomo does).
    await Promise.all(
      g.all.map(async (m) => {
        try {
          out[m] = await delayOf(m, p, g.name);
        } catch {
          // recorded as 0 in its history
        }
      }),
    );
    sendJson(res, 200, out);
  });
  api.route('GET', '/providers/proxies', (_req, res) => sendJson(res, 200, { providers: {} }));
  api.route('GET', '/providers/proxies/:name', (req) => {
    throw notFound(`no proxy provider named ${req.params.name!} (sluice has none)`);
  });

  // --- DNS -------------------------------------------------------------------------
  api.route('GET', '/dns/query', async (req, res) => {
    const name = req.query.get('name') ?? '';
    if (name === '' || nameToLabels(name) === null) throw badRequest(`query parameter name: expected a domain name, got ${JSON.stringify(name.slice(0, 100))}`);
    const typeText = (req.query.get('type') ?? 'A').toUpperCase();
    const type = /^\d{1,5}$/.test(typeText) ? Number(typeText) : (DnsType as Record<string, number>)[typeText];
    if (type === undefined || type < 1 || type > 65535) throw badRequest(`query parameter type: expected a record type such as A, AAAA, CNAME, TXT, or a number, got ${JSON.stringify(typeText.slice(0, 20))}`);
    let answer: Uint8Array;
    try {
      answer = await engine.dnsQuery(buildQuery({ id: randomInt(0, 65536), name, type, ednsUdpSize: 1232 }));
    } catch (err) {
      throw new ApiError(502, `DNS query failed: ${(err as Error).message}`);
    }
    const m = parseMessage(answer);
    if (m === null) throw new ApiError(502, 'the upstream answer does not parse');
    const rr = (r: DnsRecord): Record<string, unknown> => ({ name: r.name.endsWith('.') ? r.name : `${r.name}.`, type: r.type, TTL: r.ttl, data: recordData(r) });
    sendJson(res, 200, {
      Status: m.rcode,
      Question: m.questions.map((q) => ({ name: q.name.endsWith('.') ? q.name : `${q.name}.`, qtype: q.type, qclass: q.class })),
      TC: m.tc,
      RD: m.rd,
      RA: m.ra,
      AD: m.ad,
      CD: m.cd,
      Server: 'sluice upstreams',
      ...(m.answers.length > 0 ? { Answer: m.answers.map(rr) } : {}),
      ...(m.authorities.length > 0 ? { Authority: m.authorities.map(rr) } : {}),
      ...(m.additionals.length > 0 ? { Additional: m.additionals.map(rr) } : {}),
    });
  });
  api.route('POST', '/cache/fakeip/flush', async (_req, res) => {
    const n = await engine.flushFakeIp();
    if (n === null) throw badRequest('dns.mode is not fake-ip: there is no fake-IP table to flush');
    sendNoContent(res);
  });

  // --- /storage (zashboard keeps its settings here; memory only, bounded) -------------
  api.route('GET', '/storage/:key', (req, res) => {
    const v = storage.get(req.params.key!);
    res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8' });
    res.end(v ?? 'null');
  });
  api.route('PUT', '/storage/:key', async (req, res) => {
    const key = req.params.key!;
    const v = await readJson(req.raw);
    if (!storage.has(key) && storage.size >= STORAGE_KEYS) throw badRequest(`at most ${STORAGE_KEYS} storage keys`);
    storage.set(key, JSON.stringify(v ?? null));
    sendNoContent(res);
  });
  api.route('DELETE', '/storage/:key', (req, res) => {
    storage.delete(req.params.key!);
    sendNoContent(res);
  });

  // --- mihomo-only -------------------------------------------------------------------
  const unsupported = (what: string) => (_req: ApiRequest, res: ServerResponse): void => sendJson(res, 501, { message: `not supported by sluice: ${what}` });
  api.route('POST', '/restart', unsupported('restart it with systemctl restart sluice (or SIGTERM and start again)'));
  for (const p of ['/upgrade', '/upgrade/ui', '/upgrade/geo']) api.route('POST', p, unsupported('sluice is upgraded with its package'));
  api.route('POST', '/configs/geo', unsupported('no geo databases to update'));
  api.route('PATCH', '/rules/disable', unsupported('rules cannot be switched off at run time; edit the config and reload'));
  api.route('POST', '/cache/dns/flush', unsupported('the DNS cache is not flushed at run time'));
  api.route('GET', '/debug/*', unsupported('no pprof in a Node.js process'));
  api.route('PUT', '/debug/gc', unsupported('no manual GC'));
}

function recordData(r: DnsRecord): string {
  if (r.address !== null) return r.address;
  if (r.target !== null) return r.target;
  if (r.soa !== null) return `${r.soa.mname} ${r.soa.rname} ${r.soa.serial} ${r.soa.refresh} ${r.soa.retry} ${r.soa.expire} ${r.soa.minimum}`;
  return Buffer.from(r.data).toString('hex');
}

export { GLOBAL };
