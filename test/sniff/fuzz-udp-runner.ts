/** Shared runner for the UDP fuzz files: one fixture set, 50,000 mutations each, every parser. */
import { sniffTlsClientHello } from '../../src/engine/sniff/tls-client-hello.js';
import { sniffHttpRequest } from '../../src/engine/sniff/http-host.js';
import { sniffDnsTcp, sniffDnsUdp } from '../../src/engine/sniff/dns-query.js';
import { sniffQuicInitial } from '../../src/engine/sniff/quic-initial.js';
import { DatagramSniffer, sniffDatagram } from '../../src/engine/sniff/index.js';
import type { SniffResult } from '../../src/engine/sniff/result.js';
import { Rng, clientHelloMessage, concat, dnsQuery, hex } from './fixtures.js';
import { malformed, mutate } from './fuzz-helpers.js';
import { RFC9001_CLIENT_INITIAL, V2, cryptoFrame, sealInitial } from './quic-builder.js';

const N = 50_000;

function check(t: Test, what: string, input: Uint8Array, fn: () => SniffResult, counts: Record<string, number>): boolean {
  let r: SniffResult;
  try {
    r = fn();
  } catch (e) {
    t.fail(`${what} threw: ${String(e)} input=${Buffer.from(input).toString('hex')}`);
    return false;
  }
  const bad = malformed(r);
  if (bad !== null) {
    t.fail(`${what}: ${bad} input=${Buffer.from(input).toString('hex')}`);
    return false;
  }
  const key = `${what.split(' ')[0]}:${r.kind}`;
  counts[key] = (counts[key] ?? 0) + 1;
  return true;
}

import type { Test } from 'tap';

/** `which` selects the fixtures: the two QUIC Initials run in separate files to keep each under 20 s. */
export async function runUdpFuzz(t: Test, which: 'dns' | 'v1' | 'v2'): Promise<void> {
  const hello = clientHelloMessage({ sni: 'v2.example', alpn: ['h3'] });
  const dcid = hex('a1a2a3a4a5a6a7a8');
  const v2 = sealInitial({ version: V2, dcid, frames: concat(cryptoFrame(60, hello.subarray(60)), hex('01'), cryptoFrame(0, hello.subarray(0, 60))) });
  const all: Array<[string, Uint8Array]> = [
    ['RFC 9001 A.2 Initial', RFC9001_CLIENT_INITIAL],
    ['QUIC v2 Initial', v2],
    ['DNS query', dnsQuery('www.example.com', { edns: true })],
    ['DNS query with pointer', concat(dnsQuery('a.example'), hex('c00c 0001 0001'))],
  ];
  const pick = which === 'v1' ? [0] : which === 'v2' ? [1] : [2, 3];
  const fixtures = pick.map((i) => all[i]!);
  const spliceWith = all.map((f) => f[1]);
  const counts: Record<string, number> = {};
  const rng = new Rng(which === 'v2' ? 0x2222 : 0xd15ea5e);
  for (const [fname, fixture] of fixtures) {
    const quicFixture = fname.includes('Initial');
    const n = N;
    for (let i = 0; i < n; i++) {
      // Opening an Initial costs a key derivation and an AES-GCM pass: the
      // combined entry points get every 5th QUIC input to keep the file fast.
      const all = !quicFixture || i % 5 === 0;
      const input = mutate(fixture, spliceWith[rng.int(spliceWith.length)]!, rng);
      const ok =
        check(t, `quic on ${fname}`, input, () => sniffQuicInitial(input), counts) &&
        check(t, `dns-udp on ${fname}`, input, () => sniffDnsUdp(input), counts) &&
        (!all || check(t, `datagram53 on ${fname}`, input, () => sniffDatagram(input, 53), counts)) &&
        check(t, `tls on ${fname}`, input, () => sniffTlsClientHello(input), counts) &&
        check(t, `http on ${fname}`, input, () => sniffHttpRequest(input), counts) &&
        check(t, `dns-tcp on ${fname}`, input, () => sniffDnsTcp(input), counts) &&
        (!quicFixture || !all ||
          check(t, `session on ${fname}`, input, () => {
            const s = new DatagramSniffer(443, { maxDatagrams: 2 });
            s.push(fixture);
            s.push(input);
            return s.finish();
          }, counts));
      if (!ok) return;
    }
    t.pass(`${n} mutations of ${fname}`);
  }
  if (which === 'dns') t.ok((counts['dns-udp:found'] ?? 0) > 0, `dns found ${counts['dns-udp:found']}`);
  else {
    t.ok((counts['quic:found'] ?? 0) > 0, `quic found ${counts['quic:found']}`);
    t.ok((counts['quic:not-this'] ?? 0) > 0, `quic not-this ${counts['quic:not-this']}`);
  }
}

