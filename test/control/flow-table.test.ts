/**
 * The CLI's flow table (src/control/flow-table.ts) and API address parsing
 * (src/control/client.ts): rates from two snapshots, sorting, filtering,
 * columns cut to the terminal width; HOST:PORT, [v6]:port and socket paths.
 */
import t from 'tap';
import { filterRows, flowRows, formatAge, formatBytes, renderTable, sortRows, type Connection, type Snapshot } from '../../src/control/flow-table.js';
import { ControlError, parseListen } from '../../src/control/client.js';

function conn(id: string, upload: number, download: number, extra: Partial<Connection['metadata']> = {}): Connection {
  return {
    id,
    upload,
    download,
    start: '2026-01-01T00:00:00.000Z',
    chains: ['socks', 'group'],
    rule: 'DomainSuffix',
    rulePayload: 'example.com',
    metadata: { network: 'tcp', sourceIP: '192.0.2.2', sourcePort: '40000', destinationIP: '203.0.113.2', destinationPort: '443', host: '', sniffHost: 'a.example.com', ...extra },
  };
}
const snap = (connections: Connection[]): Snapshot => ({ uploadTotal: 0, downloadTotal: 0, connections });

t.test('rates come from the difference of two snapshots', async (t) => {
  const before = snap([conn('a', 100, 1000), conn('b', 0, 0)]);
  const now = snap([conn('a', 600, 3000), conn('b', 10, 20_000), conn('c', 5, 5)]);
  const rows = flowRows(now, before, 2000, Date.parse('2026-01-01T00:01:05.000Z'));
  const a = rows.find((r) => r.id === 'a')!;
  t.equal(a.upRate, 250);
  t.equal(a.downRate, 1000);
  t.equal(rows.find((r) => r.id === 'c')!.downRate, 0, 'a new flow has no rate yet');
  t.equal(a.ageMs, 65_000);
  t.equal(a.chain, 'group > socks', 'the chain reads from the first hop to the final one');
  t.equal(a.name, 'a.example.com', 'the sniffed name when there is no host');
  t.same(sortRows(rows, 'rate').map((r) => r.id), ['b', 'a', 'c']);
  t.same(sortRows(rows, 'up').map((r) => r.id), ['a', 'b', 'c']);
  t.same(filterRows(rows, 'nothing'), []);
  t.equal(filterRows(rows, 'A.EXAMPLE').length, 3, 'filter ignores case');
  t.same(flowRows(snap([]), null, 0), []);
  t.same(flowRows({ uploadTotal: 0, downloadTotal: 0, connections: null }, null, 0), [], 'a null list (sing-box style) is empty');
});

t.test('IPv6 addresses are bracketed', async (t) => {
  const [r] = flowRows(snap([conn('v6', 0, 0, { sourceIP: '2001:db8:c::2', destinationIP: '2001:db8:5::2' })]), null, 0);
  t.equal(r!.client, '[2001:db8:c::2]:40000');
  t.equal(r!.destination, '[2001:db8:5::2]:443');
});

t.test('the table fits the width by cutting flexible columns', async (t) => {
  const rows = flowRows(snap([conn('a', 1, 2, { sniffHost: 'a-very-long-name.with.many.labels.example.com' })]), null, 0);
  const wide = renderTable(rows, null);
  t.match(wide[1]!, /a-very-long-name\.with\.many\.labels\.example\.com/);
  const narrow = renderTable(rows, 100);
  for (const line of narrow) t.ok(line.length <= 100, `fits in 100 columns (${line.length})`);
  t.match(narrow[1]!, /…/, 'a cut cell ends in an ellipsis');
  t.match(narrow[0]!, /^ID\s+CLIENT/);
});

t.test('formatting', async (t) => {
  t.equal(formatBytes(0), '0 B');
  t.equal(formatBytes(999), '999 B');
  t.equal(formatBytes(1500), '1.50 kB');
  t.equal(formatBytes(12_345_678), '12.3 MB');
  t.equal(formatAge(59_999), '59s');
  t.equal(formatAge(61_000), '1m01');
  t.equal(formatAge(3_600_000 * 25), '1d01h');
});

t.test('API addresses', async (t) => {
  t.same(parseListen('127.0.0.1:9090', 'x'), { socketPath: null, host: '127.0.0.1', port: 9090, display: '127.0.0.1:9090' });
  t.same(parseListen('[::1]:9090', 'x').host, '::1');
  t.equal(parseListen('0.0.0.0:9090', 'x').host, '127.0.0.1', 'a wildcard listen is reached on loopback');
  t.equal(parseListen('[::]:9090', 'x').host, '::1');
  t.equal(parseListen('/run/sluice/api.sock', 'x').socketPath, '/run/sluice/api.sock');
  t.throws(() => parseListen('localhost', '--api'), ControlError);
  t.throws(() => parseListen('1.2.3.4:70000', '--api'), /--api: "1.2.3.4:70000" is neither/);
});
