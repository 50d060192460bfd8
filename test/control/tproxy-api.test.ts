/**
 * A TPROXY flow through the control API: `sluice run` in gateway mode
 * tproxy (nftables TPROXYs the client's forwarded traffic to sluice's
 * transparent listener, nothing enters the TUN). A rate-limited download
 * from the client namespace appears in GET /connections with inbound
 * tproxy (type TProxy), its download counter grows while it runs, and
 * DELETE /connections/:id ends it: curl fails at once, the flow leaves the
 * table, and its flow line says inbound tproxy and that the API closed it.
 *
 * Needs root, /dev/net/tun, ip, nft (nft_tproxy, nft_socket), curl, nginx.
 */
import t from 'tap';
import { requireRoot } from '../harness/netns.js';
import { SERVER_V4 } from '../harness/topology.js';
import { requireCommands } from '../fixtures/engine/lab.js';
import { apiGet, controlLab, startDownload, within, WEB_NAME } from '../fixtures/control-lab.js';

interface Conn {
  id: string;
  download: number;
  upload: number;
  chains: string[];
  metadata: { type: string; inbound: string; inboundName: string; sourceIP: string; destinationIP: string; destinationPort: string; host: string };
}

const DEST = `${SERVER_V4}:80`;

t.test('a TPROXY download in /connections, growing, and DELETE ends it', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t) || !requireCommands(t, ['ip', 'nft', 'curl', 'nginx'])) return;
  const lab = await controlLab(t, 'apitprox', '', { gatewayMode: 'tproxy' });
  await lab.sluice.waitFor((l) => l.msg === 'gateway installed', 10_000, '"gateway installed"');
  const secret = lab.secret();
  const conns = async (): Promise<Conn[]> => ((await apiGet(lab.gateway, secret, '/connections')) as { connections: Conn[] | null }).connections ?? [];
  const download = startDownload(t, lab.client);

  let first: Conn | null = null;
  for (let i = 0; i < 100 && first === null; i++) {
    first = (await conns()).find((c) => `${c.metadata.destinationIP}:${c.metadata.destinationPort}` === DEST && c.download > 0) ?? null;
    if (first === null) await new Promise((r) => setTimeout(r, 200));
  }
  if (first === null) {
    const ended = await within(download.ended, 1000);
    return t.fail(`the download never showed in /connections (curl: ${ended === null ? 'running' : `exit ${ended.code} ${ended.stderr}`})`);
  }
  t.comment(`first sight: ${JSON.stringify(first)}`);
  t.match(first.metadata, { type: 'TProxy', inbound: 'tproxy', sourceIP: '192.0.2.2', destinationIP: SERVER_V4, destinationPort: '80', host: WEB_NAME }, 'listed with inbound tproxy and the sniffed Host');
  t.same(first.chains, ['direct'], 'through direct');
  const f = first;

  await new Promise((r) => setTimeout(r, 1500));
  const again = (await conns()).find((c) => c.id === f.id);
  t.ok(again !== undefined && again.download > first.download, `its download grows live (${first.download} -> ${again?.download})`);

  const v1 = (await apiGet(lab.gateway, secret, '/v1/flows')) as { flows: Array<{ id: string; inbound: string }> };
  t.equal(v1.flows.find((x) => x.id === f.id)?.inbound, 'tproxy', '/v1/flows says inbound tproxy too');

  const deletedAt = Date.now();
  const del = await lab.gateway.exec(['curl', '-sS', '--max-time', '10', '-X', 'DELETE', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${secret}`, `http://127.0.0.1:9090/connections/${f.id}`], { timeoutMs: 20_000 });
  t.equal(del.stdout, '204', 'DELETE /connections/:id: 204');
  const ended = await within(download.ended, 10_000);
  t.ok(ended !== null, `curl ended ${ended === null ? 'not within 10 s' : `${ended.at - deletedAt} ms after the DELETE`}`);
  if (ended !== null) t.not(ended.code, 0, `curl failed (exit ${ended.code}: ${ended.stderr.trim()})`);
  t.notOk((await conns()).some((c) => c.id === f.id), 'GET /connections no longer lists the flow');
  const line = await lab.sluice.waitForFlow({ dst: DEST }, 10_000);
  t.match(line, { inbound: 'tproxy' }, 'the flow line: inbound tproxy');
  t.match(line.close, /API/i, `and who closed it: close "${line.close}", ${line.bytesDown} bytes down`);
});
