/**
 * A pcap of every `sluice run` an integration test starts: the environment
 * that makes sluice record its TUN from the first packet (SLUICE_CAPTURE_FILE,
 * src/commands/capture-env.ts, the same capture link wrapper as `sluice
 * capture`), kept and named in the TAP output when the test fails, removed
 * when it passes. SLUICE_TEST_CAPTURE=0 turns it off (throughput runs).
 */
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { LinkEndpoint } from '../../src/link/link.js';
import { CaptureLink } from '../../src/link/capture.js';

interface TestLike {
  teardown(fn: () => unknown): void;
  passing(): boolean;
  comment(...args: unknown[]): void;
  readonly name: string;
}

let serial = 0;

/** The directory failing tests leave their pcaps in. */
export const PCAP_DIR = path.join(tmpdir(), 'sluice-test-pcaps');

/** Env for one sluice child: add it to the child's environment. */
export function captureEnv(t: TestLike, label = 'sluice'): NodeJS.ProcessEnv {
  if (process.env.SLUICE_TEST_CAPTURE === '0') return {};
  mkdirSync(PCAP_DIR, { recursive: true });
  const base = path.basename(process.argv[1] ?? 'test').replace(/\.test\.js$/, '');
  const slug = `${base}-${t.name}`.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 80);
  const file = path.join(PCAP_DIR, `${slug}-${label}-${process.pid}-${serial++}.pcap`);
  t.teardown(() => {
    if (t.passing()) {
      rmSync(file, { force: true });
      return;
    }
    let size = -1;
    try {
      size = statSync(file).size;
    } catch {
      // sluice never opened it (it failed before the TUN)
    }
    t.comment(size < 0 ? `no pcap: sluice did not get as far as ${file}` : `pcap of sluice's TUN kept for this failure: ${file} (${size} bytes; tcpdump -nn -r ${file})`);
  });
  return { SLUICE_CAPTURE_FILE: file, SLUICE_CAPTURE_SNAPLEN: '512' };
}

/**
 * For in-process stack tests over a MemoryLink (test/stack/memory-link.ts):
 * wraps `link` in the capture link with a capture of everything running,
 * and at teardown, when the test failed, writes the pcap to PCAP_DIR and
 * names it in the TAP output. Give the stack the returned link.
 */
export function pcapOnFailure(t: TestLike, link: LinkEndpoint, label = 'stack'): CaptureLink {
  const wrapped = new CaptureLink(link);
  const cap = wrapped.capture({ queueBytes: 16 << 20 });
  const chunks: Buffer[] = [cap.fileHeader() as Buffer];
  cap.onReadable = () => {
    for (let c = cap.take(); c !== null; c = cap.take()) chunks.push(c);
  };
  t.teardown(() => {
    for (let c = cap.take(); c !== null; c = cap.take()) chunks.push(c);
    cap.stop();
    if (t.passing()) return;
    mkdirSync(PCAP_DIR, { recursive: true });
    const slug = `${path.basename(process.argv[1] ?? 'test').replace(/\.test\.js$/, '')}-${t.name}`.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 80);
    const file = path.join(PCAP_DIR, `${slug}-${label}-${process.pid}-${serial++}.pcap`);
    writeFileSync(file, Buffer.concat(chunks.map((c) => Buffer.from(c))));
    t.comment(`pcap of the test's link kept for this failure: ${file} (${cap.captured} packets, ${cap.dropped} dropped; tcpdump -nn -r ${file})`);
  });
  return wrapped;
}
