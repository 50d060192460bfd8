/**
 * The arithmetic and parsing of the peer benchmark (bench/peers-table.ts,
 * bench/peers-measure.ts's wrk reader, bench/peers.bench.ts's options): no
 * namespaces, no timing.
 */
import t from 'tap';
import { bestPeer, cell, markdownTable, median, medians, ratio, type PathResult, type PeerSample } from '../../bench/peers-table.js';
import { parseWrk } from '../../bench/peers-measure.js';
import { parseOptions } from '../../bench/peers.bench.js';

function sample(over: Partial<PeerSample>): PeerSample {
  return {
    up1: NaN,
    down1: NaN,
    up8: NaN,
    down8: NaN,
    keepAliveRps: NaN,
    keepAliveP99Ms: NaN,
    closeRps: NaN,
    cpuMsPerGB: NaN,
    cpuUsPerRequest: NaN,
    cpuUsPerConnection: NaN,
    peakRssMiB: NaN,
    ...over,
  };
}

t.test('median: the middle value, the mean of the middle two, failed runs left out', async (t) => {
  t.equal(median([3, 1, 2]), 2);
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.equal(median([5, NaN, 1, 3]), 3, 'NaN (a failed run) does not count');
  t.ok(Number.isNaN(median([])));
  t.ok(Number.isNaN(median([NaN, NaN])));
  t.same(medians([sample({ up1: 1, cpuMsPerGB: 900 }), sample({ up1: 3, cpuMsPerGB: 700 }), sample({ up1: 2, cpuMsPerGB: NaN })]).up1, 2);
  t.equal(medians([sample({ cpuMsPerGB: 900 }), sample({ cpuMsPerGB: 700 }), sample({})]).cpuMsPerGB, 800);
});

const results: PathResult[] = [
  // The kernel beats every peer, and sluice beats them on p99: neither may become the reference.
  { name: 'kernel', role: 'baseline', samples: [sample({ up1: 10, keepAliveP99Ms: 1 })] },
  {
    name: 'relay',
    role: 'peer',
    samples: [
      sample({ up1: 6, keepAliveP99Ms: 4, cpuMsPerGB: 900, peakRssMiB: 60 }),
      sample({ up1: 2, keepAliveP99Ms: 8, cpuMsPerGB: 1100, peakRssMiB: 64 }),
      sample({ up1: 4, keepAliveP99Ms: 6, cpuMsPerGB: 1000, peakRssMiB: 62 }),
    ],
  },
  { name: 'slirp', role: 'peer', samples: [sample({ up1: 5, keepAliveP99Ms: 3, cpuMsPerGB: 1200, peakRssMiB: 500 })] },
  { name: 'pasta', role: 'peer', samples: [], skipped: 'pasta missing' },
  { name: 'sluice', role: 'subject', samples: [sample({ up1: 2.5, keepAliveP99Ms: 2, cpuMsPerGB: 2000, peakRssMiB: 186 })] },
];

t.test('the best peer: the highest rate and the lowest cost among the peers only, from their medians', async (t) => {
  const best = bestPeer(results);
  t.equal(best.up1, 5, 'slirp (5) over the relay median (4); the kernel (10) is not a peer');
  t.equal(best.keepAliveP99Ms, 3, 'lowest p99 among the peers; sluice (2) is not a peer');
  t.equal(best.cpuMsPerGB, 1000, 'the relay median, the lower cost');
  t.equal(best.peakRssMiB, 62);
  t.ok(Number.isNaN(best.closeRps), 'no peer measured it');
});

t.test('ratios and cells', async (t) => {
  t.equal(ratio(2.5, 5), 0.5);
  t.equal(ratio(2000, 1000), 2, 'a cost twice the best peer reads ×2.00');
  t.ok(Number.isNaN(ratio(NaN, 5)));
  t.ok(Number.isNaN(ratio(5, 0)));
  t.equal(cell(2.5, 5, 2), '2.50 ×0.50');
  t.equal(cell(25200, 28100, 0), '25,200 ×0.90');
  t.equal(cell(NaN, 5, 2), '–');
  t.equal(cell(7, NaN, 1), '7.0', 'no reference: the value alone');
});

t.test('the markdown table', async (t) => {
  const lines = markdownTable(results).split('\n');
  t.equal(lines.length, 2 + results.length, 'a header, the rule, a row per path');
  t.match(lines[0], /^\| path \| 1 flow up Gbit\/s ↑ \| .* \| p99 ms ↓ \|/);
  const row = (name: string): string[] => lines.find((l) => l.startsWith(`| ${name} |`))!.split(' | ');
  t.equal(row('kernel')[1], '10.00 ×2.00');
  t.equal(row('relay')[1], '4.00 ×0.80');
  t.equal(row('slirp')[1], '5.00 ×1.00', 'the best peer itself');
  t.equal(row('sluice')[1], '2.50 ×0.50');
  t.equal(row('sluice')[6], '2.0 ×0.67', 'p99: below 1 is better than the best peer');
  t.equal(row('sluice')[8], '2,000 ×2.00', 'CPU per GB twice the best peer');
  t.equal(row('kernel')[8], '–', 'the kernel path has no process to charge');
  t.match(lines.find((l) => l.startsWith('| pasta |')), /not run: pasta missing/);
  for (const l of lines) t.equal(l.split('|').length, lines[0]!.split('|').length, 'every row has every column');
});

t.test("wrk's report", async (t) => {
  const text = [
    'Running 2s test @ http://203.0.113.2:80/1k.bin',
    '  2 threads and 50 connections',
    '  Thread Stats   Avg      Stdev     Max   +/- Stdev',
    '    Latency     2.31ms    1.05ms  18.03ms   80.12%',
    '    Req/Sec     8.48k   612.21     9.51k    70.00%',
    '  Latency Distribution',
    '     50%    2.12ms',
    '     75%  800.00us',
    '     90%    1.38s',
    '     99%  650.00us',
    '  35449 requests in 2.10s, 43.91MB read',
    '  Socket errors: connect 1, read 3, write 0, timeout 2',
    '  Non-2xx or 3xx responses: 4',
    'Requests/sec:  16876.24',
    'Transfer/sec:     20.91MB',
  ].join('\n');
  const r = parseWrk(text);
  t.equal(r.rps, 16876.24);
  t.equal(r.requests, 35449);
  t.equal(r.p99Ms, 0.65, 'the 99% line, microseconds in ms');
  t.equal(r.errors, 10, 'socket errors plus non-2xx responses');
  t.equal(parseWrk(text.replace('99%  650.00us', '99%    1.50s')).p99Ms, 1500);
  const bad = parseWrk('unable to connect to 203.0.113.2:80 Connection refused');
  t.ok(Number.isNaN(bad.rps) && Number.isNaN(bad.p99Ms) && Number.isNaN(bad.requests));
  t.equal(bad.errors, 0);
});

t.test('options: defaults, --quick, the environment, arguments win, bad values named', async (t) => {
  const full = parseOptions([], {});
  t.match(full, { reps: 3, bulkSeconds: 10, httpSeconds: 8, connections: 50, paths: ['kernel', 'relay', 'slirp4netns', 'pasta', 'sluice'] });
  t.match(parseOptions(['--quick'], {}), { reps: 3, bulkSeconds: 2, httpSeconds: 3 });
  t.match(parseOptions([], { PEERS_REPS: '5', PEERS_PATHS: 'kernel,sluice', PEERS_JSON: '/x.json' }), { reps: 5, paths: ['kernel', 'sluice'], json: '/x.json' });
  t.match(parseOptions(['--reps', '1', '--bulk-seconds', '4'], { PEERS_REPS: '5', PEERS_QUICK: '1' }), { reps: 1, bulkSeconds: 4, httpSeconds: 3 });
  t.throws(() => parseOptions(['--reps', '0'], {}), /--reps must be an integer of at least 1/);
  t.throws(() => parseOptions(['--bulk-seconds', 'x'], {}), /--bulk-seconds must be an integer/);
  t.throws(() => parseOptions(['--paths', 'kernel,hev'], {}), /unknown path "hev"/);
  t.throws(() => parseOptions(['--frobnicate', '1'], {}), /bad argument "--frobnicate"/);
  t.throws(() => parseOptions(['--reps'], {}), /bad argument "--reps"/);
});
