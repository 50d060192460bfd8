/**
 * The metric set (src/control/metrics.ts) from its sources and the engine's
 * once-per-event hooks: the scrape is strict Prometheus text, every metric
 * of the issue is there, scrape-time values follow their sources, labels
 * stay bounded.
 */
import t from 'tap';
import { SluiceMetrics, dialFailureReason, type MetricsSources, type OpenFlowSample } from '../../src/control/metrics.js';
import { OutboundError, OutboundErrorCode } from '../../src/outbound/errors.js';
import { parsePrometheusText, sampleSum } from './prom-text.js';

function sources() {
  const stack = { drops: { bad_checksum: 3, syn_budget: 0 } as Record<string, number>, tcpRetransmits: 7 };
  const tun = { rxPackets: 10, rxBytes: 1000, txPackets: 20, txBytes: 3000 };
  const tally = new Float64Array(12);
  const open: OpenFlowSample[] = [];
  const hits = [{ hits: 0 }, { hits: 0 }, { hits: 0 }];
  const src: MetricsSources = {
    stack: () => stack as never,
    tun: () => tun,
    dnsMode: 'fake-ip',
    dnsTally: () => tally,
    fakeIp: () => ({ v4Entries: 5, v6Entries: 1, v4Capacity: 65534, v6Capacity: 1 << 20, recycled: 0, allocations: 6, reverseHits: 0, reverseMisses: 0 }),
    classifier: () => ({ kernel: { packets: 4, bytes: 400 }, tun: { packets: 2, bytes: 200 } }),
    classifierSni: () => ({ tlsBlocked: 3, tlsUnseen: 1 }),
    classifierAssign: () => ({ listener: 7 }),
    openFlows: () => open,
    ruleHits: () => hits,
  };
  return { src, stack, tun, tally, open, hits };
}

const REQUIRED = [
  'sluice_flows_total', 'sluice_flows_active', 'sluice_flow_bytes_total', 'sluice_flow_duration_seconds', 'sluice_outbound_connect_duration_seconds',
  'sluice_outbound_connect_failures_total', 'sluice_rule_matches_total', 'sluice_sniff_total', 'sluice_dns_queries_total', 'sluice_dns_upstream_duration_seconds',
  'sluice_fakeip_pool_used', 'sluice_tun_receive_packets_total', 'sluice_tun_receive_bytes_total', 'sluice_tun_transmit_packets_total', 'sluice_tun_transmit_bytes_total',
  'sluice_stack_drops_total', 'sluice_tcp_retransmits_total', 'sluice_classifier_packets_total', 'sluice_config_reloads_total',
  'process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds',
];

t.test('every metric of the set, strict text format, values from the sources and hooks', async (t) => {
  const { src, stack, tun, tally, open, hits } = sources();
  const m = new SluiceMetrics(src);
  t.match(m.contentType, /^text\/plain; version=0\.0\.4/);
  let fam = parsePrometheusText(await m.text());
  for (const name of REQUIRED) t.ok(fam.has(name), `${name} is exposed`);
  t.equal(fam.get('sluice_flows_total')!.type, 'counter');
  t.equal(fam.get('sluice_flow_duration_seconds')!.type, 'histogram');
  t.equal(sampleSum(fam, 'sluice_tun_receive_packets_total'), 10);
  t.equal(sampleSum(fam, 'sluice_stack_drops_total', { reason: 'bad_checksum' }), 3);
  t.equal(sampleSum(fam, 'sluice_classifier_packets_total', { action: 'kernel' }), 4);
  t.equal(sampleSum(fam, 'sluice_classifier_bytes_total', { action: 'kernel' }), 400);
  t.equal(sampleSum(fam, 'sluice_classifier_sni_total', { result: 'tlsBlocked' }), 3);
  t.equal(sampleSum(fam, 'sluice_classifier_assign_total', { result: 'listener' }), 7);
  t.equal(sampleSum(fam, 'sluice_fakeip_pool_used', { family: 'ipv4' }), 5);
  t.equal(sampleSum(fam, 'sluice_config_reloads_total', { result: 'failure' }), 0, 'reload series exist from the start');

  // hooks: once per flow / dial / sniff / route
  hits[0]!.hits = 1;
  hits[2]!.hits = 1;
  m.sniffed('tls', 'found');
  m.sniffed(null, 'timeout');
  m.dialed('proxy', 0.02, null);
  m.dialed('proxy', 0.5, Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  m.flowEnded({ network: 'tcp', inbound: 'tun', outbound: 'proxy', close: 'fin', bytesUp: 100, bytesDown: 5000, durationMs: 1500 });
  m.flowEnded({ network: 'udp', inbound: 'tun', outbound: '', close: 'unknown fake-ip', bytesUp: 0, bytesDown: 0, durationMs: 1 });
  m.flowEnded({ network: 'tcp', inbound: 'tproxy', outbound: 'block', close: 'rejected', bytesUp: 0, bytesDown: 0, durationMs: 1 });
  m.reloaded(false);
  m.dnsUpstream(0.004, true);
  open.push({ network: 'tcp', outbound: 'proxy', bytesUp: 50, bytesDown: 70 }, { network: 'tcp', outbound: 'direct', bytesUp: 1, bytesDown: 0 });
  stack.drops.bad_checksum = 4;
  stack.tcpRetransmits = 9;
  tun.rxPackets = 12;
  tally[0 * 4 + 0] = 3; // A answered with a fake IP
  tally[1 * 4 + 2] = 1; // AAAA from upstream
  tally[2 * 4 + 3] = 2; // other, error

  fam = parsePrometheusText(await m.text());
  t.equal(sampleSum(fam, 'sluice_rule_matches_total', { rule: '0' }), 1);
  t.equal(sampleSum(fam, 'sluice_rule_matches_total', { rule: 'final' }), 1);
  t.equal(sampleSum(fam, 'sluice_sniff_total', { protocol: 'tls', outcome: 'found' }), 1);
  t.equal(sampleSum(fam, 'sluice_sniff_total', { protocol: 'none', outcome: 'timeout' }), 1);
  t.equal(sampleSum(fam, 'sluice_outbound_connect_duration_seconds_count', { outbound: 'proxy' }), 1);
  t.equal(sampleSum(fam, 'sluice_outbound_connect_failures_total', { outbound: 'proxy', reason: 'refused' }), 1);
  t.equal(sampleSum(fam, 'sluice_flows_total', { network: 'tcp', inbound: 'tun', outbound: 'proxy', result: 'ok' }), 1);
  t.equal(sampleSum(fam, 'sluice_flows_total', { outbound: 'none', result: 'unknown_fakeip' }), 1);
  t.equal(sampleSum(fam, 'sluice_flows_total', { inbound: 'tproxy', result: 'rejected' }), 1);
  t.equal(sampleSum(fam, 'sluice_flow_duration_seconds_sum', { outbound: 'proxy' }), 1.5, 'seconds, not ms');
  t.equal(sampleSum(fam, 'sluice_flow_bytes_total', { direction: 'down', outbound: 'proxy' }), 5070, 'ended + open flows');
  t.equal(sampleSum(fam, 'sluice_flow_bytes_total', { direction: 'up' }), 151);
  t.equal(sampleSum(fam, 'sluice_flows_active', { outbound: 'proxy' }), 1);
  t.equal(sampleSum(fam, 'sluice_flows_active'), 2);
  t.equal(sampleSum(fam, 'sluice_stack_drops_total', { reason: 'bad_checksum' }), 4, 'read at scrape time');
  t.equal(sampleSum(fam, 'sluice_tcp_retransmits_total'), 9);
  t.equal(sampleSum(fam, 'sluice_tun_receive_packets_total'), 12);
  t.equal(sampleSum(fam, 'sluice_dns_queries_total', { mode: 'fake-ip', qtype: 'A', result: 'fakeip' }), 3);
  t.equal(sampleSum(fam, 'sluice_dns_queries_total', { qtype: 'AAAA', result: 'upstream' }), 1);
  t.equal(sampleSum(fam, 'sluice_dns_queries_total', { qtype: 'other', result: 'error' }), 2);
  t.equal(sampleSum(fam, 'sluice_dns_upstream_duration_seconds_count'), 1);
  t.equal(sampleSum(fam, 'sluice_config_reloads_total', { result: 'failure' }), 1);

  // bounded labels: nothing that looks like an address or a name
  const allowed = new Set(['network', 'inbound', 'outbound', 'result', 'direction', 'reason', 'rule', 'protocol', 'outcome', 'mode', 'qtype', 'family', 'action', 'le', 'version', 'node_version', 'type', 'kind', 'space', 'major', 'minor', 'patch', 'quantile']);
  for (const f of fam.values()) for (const s of f.samples) for (const k of Object.keys(s.labels)) if (!allowed.has(k)) t.fail(`unexpected label ${k} on ${s.name}`);
});

t.test('two registries do not share series (own Registry, not the global one)', async (t) => {
  const a = new SluiceMetrics(sources().src);
  const b = new SluiceMetrics(sources().src);
  a.reloaded(true);
  const fb = parsePrometheusText(await b.text());
  t.equal(sampleSum(fb, 'sluice_config_reloads_total', { result: 'success' }), 0);
});

t.test('dial failure reasons are a fixed set', async (t) => {
  t.equal(dialFailureReason(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })), 'refused');
  t.equal(dialFailureReason(Object.assign(new Error('x'), { code: 'ETIMEDOUT' })), 'timeout');
  t.equal(dialFailureReason(new Error('too many dials in progress (limits.dials / limits.dialsPerSource)')), 'limit');
  t.equal(dialFailureReason(new OutboundError(OutboundErrorCode.AUTH, 'bad password', { outbound: 'proxy' })), 'auth');
  t.equal(dialFailureReason(new OutboundError(OutboundErrorCode.TIMEOUT, 'slow', { outbound: 'proxy' })), 'timeout');
  t.equal(dialFailureReason(new OutboundError(OutboundErrorCode.PROXY_REFUSED, 'REP 5', { outbound: 'proxy' })), 'proxy_error');
  t.equal(dialFailureReason(new Error('something new')), 'other');
});

t.test('the parser is strict', async (t) => {
  t.throws(() => parsePrometheusText('x 1\n'), /without a TYPE/);
  t.throws(() => parsePrometheusText('# TYPE x_total counter\nx_total{a="1} 1\n'), /unterminated/);
  t.throws(() => parsePrometheusText('# TYPE x_total counter\nx_total -1\n'), /counter/);
  t.throws(() => parsePrometheusText('# TYPE x gauge\nx 1'), /newline/);
  t.throws(() => parsePrometheusText('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 0\n'), /cumulative/);
  t.throws(() => parsePrometheusText('# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n'), /not contiguous/);
});

t.test('metrics.listen: config errors name the field; an address in use fails naming metrics.listen', async (t) => {
  const { parseConfig } = await import('../../src/config/load.js');
  const { openMetricsListener } = await import('../../src/control/observe.js');
  const net = await import('node:net');
  await t.rejects(parseConfig('metrics: { listen: "nowhere" }\n', 'x.yaml'), /metrics\.listen/);
  await t.rejects(parseConfig('metrics: { listen: "127.0.0.1:99999" }\n', 'x.yaml'), /metrics\.listen/);
  t.equal((await parseConfig('final: direct\n', 'x.yaml')).metrics.listen, null, 'off by default');
  t.equal((await parseConfig('metrics: { listen: "127.0.0.1:9091" }\n', 'x.yaml')).metrics.listen, '127.0.0.1:9091');
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  const port = (taken.address() as { port: number }).port;
  t.teardown(() => taken.close());
  await t.rejects(openMetricsListener({ listen: `127.0.0.1:${port}` }), /metrics\.listen: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE \(address already in use/);
  const s = await openMetricsListener({ listen: '127.0.0.1:0' }).catch(() => null);
  t.equal(s, null, 'port 0 is not a listen address');
  const m = new SluiceMetrics(sources().src);
  const free = await new Promise<number>((r) => {
    const p = net.createServer();
    p.listen(0, '127.0.0.1', () => {
      const n = (p.address() as { port: number }).port;
      p.close(() => r(n));
    });
  });
  const srv = (await openMetricsListener({ listen: `127.0.0.1:${free}` }))!;
  t.teardown(() => srv.close());
  const starting = await fetch(`http://127.0.0.1:${free}/metrics`);
  t.equal(starting.status, 503, '503 until the metrics are served');
  srv.serve(m);
  const ok = await fetch(`http://127.0.0.1:${free}/metrics`);
  t.equal(ok.status, 200);
  t.ok(parsePrometheusText(await ok.text()).has('sluice_flows_total'));
  t.equal((await fetch(`http://127.0.0.1:${free}/other`)).status, 404);
  t.equal((await fetch(`http://127.0.0.1:${free}/metrics`, { method: 'POST' })).status, 405);
});
