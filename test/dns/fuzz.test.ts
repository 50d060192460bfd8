import t from 'tap';
import { DnsCache } from '../../src/dns/cache.js';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { buildQuery, buildResponse, decodeMessage, DnsType, encodeMessage, parseMessage } from '../../src/dns/message.js';
import { DnsHijack } from '../../src/dns/server.js';
import { DnsSnoop } from '../../src/dns/snoop.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));

// Seeds: real captures (see message.test.ts) plus built messages with SOA, OPT options and raw types.
const SEEDS: Uint8Array[] = [
  hex('f8f30120000100000000000005616c696173076578616d706c6504746573740000010001'),
  hex(
    'f8f38580000100020000000005616c696173076578616d706c6504746573740000010001c00c000500010000012c001506746172676574076578616d706c65047465737400c030000100010000012c0004c0000214',
  ),
  hex('2c2485800001000100000001027636076578616d706c65047465737400001c0001c00c001c00010000012c001020010db800000000000000000000001000002904d0000000000000'),
  encodeMessage({
    id: 77,
    flags: 0x8183,
    questions: [{ name: 'gone.example.test', type: DnsType.A }],
    authorities: [
      {
        name: 'example.test',
        type: DnsType.SOA,
        ttl: 600,
        soa: { mname: 'ns1.example.test', rname: 'hostmaster.example.test', serial: 2024, refresh: 7200, retry: 900, expire: 1209600, minimum: 300 },
      },
    ],
    opt: { udpSize: 1232, options: hex('000a000811223344556677 88'.replace(/ /g, '')) },
  }),
  encodeMessage({
    id: 78,
    flags: 0x8180,
    questions: [{ name: 'mail.example.test', type: DnsType.MX }],
    answers: [
      { name: 'mail.example.test', type: DnsType.CNAME, ttl: 60, target: 'mx.example.test' },
      { name: 'mx.example.test', type: DnsType.MX, ttl: 60, data: hex('000a026d78c00c') },
      { name: 'mx.example.test', type: DnsType.PTR, ttl: 60, target: 'mail.example.test' },
    ],
  }),
];

/** xorshift32, seeded: the run is the same every time. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function mutate(seed: Uint8Array, r: () => number): Uint8Array {
  let b = seed.slice();
  const ops = 1 + (r() % 4);
  for (let k = 0; k < ops; k++) {
    const op = r() % 8;
    const at = b.length === 0 ? 0 : r() % b.length;
    switch (op) {
      case 0: // flip a bit
        if (b.length) b[at]! ^= 1 << (r() % 8);
        break;
      case 1: // random byte
        if (b.length) b[at] = r() & 0xff;
        break;
      case 2: // truncate
        b = b.subarray(0, at);
        break;
      case 3: {
        // plant a compression pointer anywhere, often at or after itself
        if (b.length > 1 && at + 1 < b.length) {
          const target = r() % (b.length + 4);
          b[at] = 0xc0 | ((target >> 8) & 0x3f);
          b[at + 1] = target & 0xff;
        }
        break;
      }
      case 4: {
        // insert random bytes
        const n = 1 + (r() % 8);
        const ins = new Uint8Array(n);
        for (let i = 0; i < n; i++) ins[i] = r() & 0xff;
        const nb = new Uint8Array(b.length + n);
        nb.set(b.subarray(0, at));
        nb.set(ins, at);
        nb.set(b.subarray(at), at + n);
        b = nb;
        break;
      }
      case 5: // inflate a count
        if (b.length >= 12) b[4 + 2 * (r() % 4) + 1] = r() & 0xff;
        break;
      case 6: // big label length
        if (b.length) b[at] = 0x3f;
        break;
      default: {
        // duplicate a span
        const len = r() % 16;
        const nb = new Uint8Array(b.length + len);
        nb.set(b);
        nb.set(b.subarray(at, at + len), b.length);
        b = nb.subarray(0, b.length + Math.min(len, b.length - at));
      }
    }
  }
  return b;
}

t.test('50,000 mutated messages: the parser never throws; what parses re-encodes', async (t) => {
  const r = rng(0x5eed1e55);
  let parsed = 0;
  let threw = 0;
  let reencodeFailures = 0;
  for (let i = 0; i < 50_000; i++) {
    const m = mutate(SEEDS[i % SEEDS.length]!, r);
    try {
      const res = decodeMessage(m);
      if (res.message !== null) {
        parsed++;
        // Whatever we accept must be representable again (names valid, sizes fine).
        const msg = res.message;
        try {
          const again = encodeMessage({
            id: msg.id,
            flags: msg.flags,
            questions: msg.questions,
            // Typed fields where decoded (raw RDATA of those may hold pointers into the old message).
            answers: msg.answers.map((x) => ({
              name: x.name,
              type: x.type,
              class: x.class,
              ttl: x.ttl,
              data: x.data,
              ...(x.address !== null ? { address: x.address } : {}),
              ...(x.target !== null ? { target: x.target } : {}),
              ...(x.soa !== null ? { soa: x.soa } : {}),
            })),
          });
          const back = parseMessage(again);
          if (back === null || back.questions.map((q) => q.name.toLowerCase()).join() !== msg.questions.map((q) => q.name.toLowerCase()).join()) {
            if (reencodeFailures++ < 3) t.comment(`re-encode mismatch: ${Buffer.from(m).toString('hex')}`);
          }
        } catch (err) {
          if (reencodeFailures++ < 3) t.comment(`re-encode threw ${String(err)}: ${Buffer.from(m).toString('hex')}`);
        }
      } else if (res.error === 0) {
        threw++; // null without a reason would be a bug too
      }
    } catch {
      threw++;
    }
  }
  t.equal(threw, 0, 'no throws');
  t.equal(reencodeFailures, 0, 'accepted names and records re-encode');
  t.ok(parsed > 1000, `a useful share still parses (${parsed})`);
});

t.test('10,000 mutated queries through DnsHijack never reject', async (t) => {
  let now = 0;
  const clock = (): number => now;
  const pool = new FakeIpPool({ ipv4Range: '198.18.0.0/24', ipv6Range: 'fc00::/120', maxEntries: 64 });
  const upstream = {
    query: async (q: Uint8Array): Promise<Uint8Array> => buildResponse(parseMessage(q)!, { rcode: 0, answers: [{ name: parseMessage(q)!.questions[0]!.name, type: DnsType.TXT, ttl: 30, data: hex('026869') }] }),
  };
  const fake = new DnsHijack({ mode: 'fake-ip', pool, cache: new DnsCache({ maxEntries: 32, now: clock }), upstream });
  const real = new DnsHijack({ mode: 'real-ip', cache: new DnsCache({ maxEntries: 32, now: clock }), upstream, snoop: new DnsSnoop({ maxEntries: 32, now: clock }) });
  const r = rng(0xfeedf00d);
  const seeds = [
    SEEDS[0]!,
    buildQuery({ id: 1, name: 'v6.example.test', type: DnsType.AAAA, ednsUdpSize: 1232 }),
    buildQuery({ id: 2, name: '5.0.18.198.in-addr.arpa', type: DnsType.PTR }),
    buildQuery({ id: 3, name: 'example.test', type: DnsType.TXT }),
  ];
  let rejected = 0;
  let answered = 0;
  for (let i = 0; i < 10_000; i++) {
    const q = mutate(seeds[i % seeds.length]!, r);
    now += 10;
    for (const h of [fake, real]) {
      try {
        const out = await h.handle(q, i % 2 === 0 ? 'udp' : 'tcp');
        if (out !== null) {
          answered++;
          if (parseMessage(out) === null && out.length !== 0) t.fail('reply does not parse');
        }
      } catch {
        rejected++;
      }
    }
  }
  t.equal(rejected, 0);
  t.ok(answered > 1000, `answered ${answered}`);
  t.ok(pool.stats().v4Entries <= 64);
});
