/**
 * The capture link wrapper and the pcap writer (src/link/capture.ts,
 * pcap-writer.ts) around an in-process stack: both directions are recorded
 * as LINKTYPE_RAW pcap that tcpdump reads back, filters and counts work, a
 * full queue counts drops instead of growing, and with no capture running
 * the transmit path is the plain forwarder again.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Stack } from '../../src/stack.js';
import { CaptureLink, MAX_CAPTURES, filterMatches, parseCaptureFilter } from '../../src/link/capture.js';
import { LINKTYPE_RAW, PCAP_MAGIC_NS, parsePcap, pcapGlobalHeader } from '../../src/link/pcap-writer.js';
import { TCP_SYN } from '../../src/wire/tcp.js';
import { MemoryLink, settle } from '../stack/memory-link.js';
import { tcpSegment, udpDatagram } from '../stack/packets.js';
import { hasCommand } from '../harness/netns.js';

const execFileP = promisify(execFile);

function lab(t: { teardown(fn: () => void): void }) {
  const mem = new MemoryLink(1500);
  let clock = 1_700_000_000_000.5;
  const link = new CaptureLink(mem, { clock: () => (clock += 1.25) });
  const stack = new Stack(link, { onTcpFlow: (req) => req.reset(), onUdpSession: () => {} });
  stack.start();
  t.teardown(() => stack.close());
  return { mem, link, stack };
}

const syn = (dstPort = 80, v: 4 | 6 = 4): Uint8Array => tcpSegment({ v, srcPort: 40000, dstPort, seq: 1000, flags: TCP_SYN, window: 65535 });

function pcapFile(header: Uint8Array, ...chunks: (Buffer | null)[]): Buffer {
  return Buffer.concat([header, ...chunks.filter((c): c is Buffer => c !== null)]);
}

t.test('both directions, read back by our parser and by tcpdump', async (t) => {
  const { mem, link } = lab(t);
  const cap = link.capture();
  mem.inject(syn(80), syn(81, 6));
  await settle();
  t.equal(mem.drain().length, 2, 'two RSTs went out');
  const file = pcapFile(cap.fileHeader(), cap.take());
  const p = parsePcap(file);
  t.equal(p.linktype, LINKTYPE_RAW);
  t.equal(p.records.length, 4, 'two in, two out');
  t.same(p.records.map((r) => r.data[0]! >> 4), [4, 6, 4, 6], 'received first (one batch), then the replies');
  t.equal(p.records[0]!.timeSec, 1_700_000_000);
  t.ok(p.records[0]!.timeFrac >= 0 && p.records[0]!.timeFrac < 1e6, 'microseconds');
  t.same(cap.stats(), { captured: 4, dropped: 0, queued: 0 });
  if (!hasCommand('tcpdump')) return t.fail('tcpdump is needed (Debian package tcpdump)');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-capture-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'a.pcap'), file);
  const { stdout } = await execFileP('tcpdump', ['-r', join(dir, 'a.pcap'), '-nn', '-tt'], { env: { ...process.env, NODE_OPTIONS: '' } });
  t.comment(stdout);
  const lines = stdout.trim().split('\n');
  t.equal(lines.length, 4);
  t.match(lines[0], /^1700000000\.\d{6} IP 192\.0\.2\.2\.40000 > 203\.0\.113\.2\.80: Flags \[S\]/);
  t.match(lines[1], /IP6 2001:db8:c::2\.40000 > 2001:db8:5::2\.81: Flags \[S\]/);
  t.match(lines[2], /IP 203\.0\.113\.2\.80 > 192\.0\.2\.2\.40000: Flags \[R\.\]/);
  t.match(lines[3], /IP6 2001:db8:5::2\.81 > 2001:db8:c::2\.40000: Flags \[R\.\]/);
});

t.test('port and host filters, --count stops the capture and restores the forwarders', async (t) => {
  const { mem, link } = lab(t);
  const passCommit = link.txCommit;
  const passReserve = link.txReserve;
  const byPort = link.capture({ filter: parseCaptureFilter('443') as never });
  const byHost = link.capture({ filter: parseCaptureFilter('2001:db8:c::2') as never });
  const counted = link.capture({ count: 3 });
  t.not(link.txCommit, passCommit, 'capturing transmit path while captures run');
  let ended = false;
  counted.onEnd = () => (ended = true);
  mem.inject(syn(80), syn(443), syn(443, 6), udpDatagram(4, 5000, 53, Buffer.from('q')));
  await settle();
  mem.drain();
  const ports = parsePcap(pcapFile(byPort.fileHeader(), byPort.take())).records;
  t.equal(ports.length, 4, 'port 443: two SYNs and two RSTs');
  const hosts = parsePcap(pcapFile(byHost.fileHeader(), byHost.take())).records;
  t.equal(hosts.length, 2, 'host 2001:db8:c::2: the IPv6 SYN and its RST');
  t.ok(hosts.every((r) => r.data[0]! >> 4 === 6));
  t.equal(counted.captured, 3);
  t.equal(parsePcap(pcapFile(counted.fileHeader(), counted.take())).records.length, 3, 'exactly --count packets');
  await settle();
  t.ok(ended && counted.ended, 'the counted capture ended by itself');
  t.equal(link.captures, 2);
  byPort.stop();
  byHost.stop();
  t.equal(link.captures, 0);
  t.equal(link.txCommit, passCommit, 'no capture: the transmit path is the plain forwarder again');
  t.equal(link.txReserve, passReserve);
});

t.test('a slow consumer: the queue is bounded and drops are counted', async (t) => {
  const { mem, link } = lab(t);
  // room for a few 40-byte SYN records (16-byte headers), nothing more
  const cap = link.capture({ queueBytes: 1, snaplen: 60 });
  for (let i = 0; i < 200; i++) mem.inject(syn(1000 + i));
  await settle();
  t.equal(mem.drain().length, 200, 'every packet still went through');
  const s = cap.stats();
  t.equal(s.captured, 400);
  t.ok(s.dropped > 350, `${s.dropped} dropped`);
  t.ok(s.queued <= 76, `queue stayed at ${s.queued} bytes`);
  t.equal(parsePcap(pcapFile(cap.fileHeader(), cap.take())).records.length, 400 - s.dropped);
  cap.stop();
});

t.test('limits and bad filters', async (t) => {
  const { link } = lab(t);
  const caps = Array.from({ length: MAX_CAPTURES }, () => link.capture());
  t.throws(() => link.capture(), /at most 4 captures/);
  for (const c of caps) c.stop();
  t.match(parseCaptureFilter('example.com'), /expected an IP address \(HOST\) or a port number \(PORT\)/);
  t.match(parseCaptureFilter('70000'), /1-65535/);
  t.same(parseCaptureFilter(''), { kind: 'all' });
  const f = parseCaptureFilter('[2001:db8::1]');
  t.equal(typeof f === 'object' && f.kind, 'host');
  t.notOk(filterMatches({ kind: 'port', port: 80 }, new Uint8Array(3), 0, 3), 'short packets never match a port');
  t.notOk(filterMatches({ kind: 'port', port: 80 }, new Uint8Array([0x70]), 0, 1), 'not IP');
});

t.test('a virtio-header link: the header is not recorded; nanosecond files', async (t) => {
  const mem = new MemoryLink(1500);
  Object.defineProperty(mem, 'vnetHdr', { value: true });
  const link = new CaptureLink(mem, { clock: () => 1000.000001 });
  let got = 0;
  link.start({ onBatch: (_b, n) => (got += n), onLinkError: () => {} });
  const cap = link.capture({ resolution: 'ns' });
  const pkt = syn(80);
  const withHdr = new Uint8Array(10 + pkt.length);
  withHdr.set(pkt, 10);
  mem.inject(withHdr);
  const at = link.txReserve(withHdr.length);
  link.txBuffer.set(withHdr, at);
  link.txCommit(withHdr.length);
  t.equal(got, 1);
  const p = parsePcap(pcapFile(cap.fileHeader(), cap.take()));
  t.equal(p.resolution, 'ns');
  t.equal(new DataView(pcapGlobalHeader(100, 'ns').buffer).getUint32(0, true), PCAP_MAGIC_NS);
  t.equal(p.records.length, 2);
  for (const r of p.records) t.same([...r.data], [...pkt], 'the IP packet without the virtio header');
  t.equal(p.records[0]!.timeSec, 1);
  t.equal(p.records[0]!.timeFrac, 1, '1 ns');
  cap.stop();
});

t.test('pcapOnFailure: an in-process stack test leaves a pcap only when it fails', async (t) => {
  const { pcapOnFailure } = await import('../harness/capture.js');
  const { readFileSync, rmSync: rm } = await import('node:fs');
  const run = async (passing: boolean): Promise<{ comments: string[] }> => {
    const hooks: (() => unknown)[] = [];
    const comments: string[] = [];
    const fake = { name: `fake ${passing}`, teardown: (fn: () => unknown) => hooks.push(fn), passing: () => passing, comment: (s: unknown) => comments.push(String(s)) };
    const mem = new MemoryLink(1500);
    const stack = new Stack(pcapOnFailure(fake, mem), { onTcpFlow: (req) => req.reset(), onUdpSession: () => {} });
    stack.start();
    mem.inject(syn(80));
    await settle();
    stack.close();
    for (const h of hooks) await h();
    return { comments };
  };
  t.same((await run(true)).comments, [], 'a passing test: nothing kept, nothing said');
  const failed = await run(false);
  t.equal(failed.comments.length, 1);
  const m = /kept for this failure: (\S+\.pcap) \(2 packets, 0 dropped/.exec(failed.comments[0]!);
  t.ok(m, failed.comments[0]);
  if (m === null) return;
  const p = parsePcap(new Uint8Array(readFileSync(m[1]!)));
  t.equal(p.records.length, 2, 'the SYN and the RST');
  rm(m[1]!);
});
