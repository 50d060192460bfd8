/**
 * The ACKs the stack sends for out-of-order data read in one batch from the
 * TUN (issue 12 item 4, uploads under wire loss): one ACK per out-of-order
 * or hole-filling segment (RFC 5681 4.2), sent before the next segment of
 * the batch is processed, each SACK option led by the range that segment
 * changed (RFC 2018 4). One ACK per batch reported only the batch's last
 * ranges; a kernel sender's RACK then took the rest for lost and sent the
 * data again (3-4 times the wire's drops).
 */
import t from 'tap';
import type { TcpStream } from '../../src/stack/tcp-stream.js';
import { establishedFlow } from './established.js';
import { TCP_ACK } from '../../src/wire/tcp.js';
import { settle, type MemoryLink } from './memory-link.js';
import { readTcp, tcpOptions, tcpSegment } from './packets.js';

/** MSS 1460, NOP, NOP, SACK permitted. */
const SYN_OPTIONS = Uint8Array.from([2, 4, 0x05, 0xb4, 1, 1, 4, 2]);
const MSS = 1460;

/** The SACK blocks of a segment we sent (RFC 2018 3), as [left, right] pairs. */
function sackBlocks(pkt: Uint8Array): [number, number][] {
  const dv = new DataView(pkt.buffer, pkt.byteOffset);
  const out: [number, number][] = [];
  for (const o of tcpOptions(pkt)) if (o.kind === 5) for (let j = o.at + 2; j + 8 <= o.at + o.len; j += 8) out.push([dv.getUint32(j), dv.getUint32(j + 4)]);
  return out;
}

async function sackFlow(t: { teardown(fn: () => void): void }, v: 4 | 6): Promise<{ link: MemoryLink; stream: TcpStream; iss: number }> {
  const f = await establishedFlow(t, v, SYN_OPTIONS);
  f.link.drain();
  return { link: f.link, stream: f.stream, iss: f.iss };
}

for (const v of [4, 6] as const) {
  t.test(`IPv${v}: one batch with three holes gets an ACK per out-of-order segment, the newest range first`, async (t) => {
    const { link, stream, iss } = await sackFlow(t, v);
    stream.on('data', () => {});
    const at = (k: number): number => 1001 + k * MSS;
    const data = (k: number): Uint8Array => tcpSegment({ v, seq: at(k), ack: iss + 1, flags: TCP_ACK, payload: new Uint8Array(MSS).fill(k) });
    // Segments 1, 3 and 5 are lost on the wire: 0 in order, then 2, 4, 6, 7 above holes.
    link.inject(data(0), data(2), data(4), data(6), data(7));
    await settle();
    const acks = link.drain().map((p) => ({ ack: readTcp(p).ack, blocks: sackBlocks(p) }));
    const ooo = acks.filter((a) => a.blocks.length > 0);
    t.ok(ooo.length >= 4, `an ACK for each of the four out-of-order segments (${ooo.length})`);
    t.ok(acks.every((a) => a.ack === at(1)), 'all acknowledge up to the first hole');
    t.same(ooo[0]!.blocks, [[at(2), at(3)]], 'segment 2: its own range');
    t.same(ooo[1]!.blocks, [[at(4), at(5)], [at(2), at(3)]], 'segment 4: its range leads');
    t.same(ooo[2]!.blocks, [[at(6), at(7)], [at(4), at(5)], [at(2), at(3)]], 'segment 6: its range leads, the others by recency');
    t.same(ooo.at(-1)!.blocks[0], [at(6), at(8)], 'segment 7 extends the newest range');

    // The retransmission of segment 1 fills the first hole: ACKed at once,
    // and the next segment (3) gets its own ACK too.
    link.inject(data(1), data(3));
    await settle();
    const fills = link.drain().map((p) => ({ ack: readTcp(p).ack, blocks: sackBlocks(p) }));
    t.same(
      fills.map((a) => a.ack),
      [at(3), at(5)],
      'one ACK per hole-filling segment',
    );
    t.same(fills[0]!.blocks, [[at(6), at(8)], [at(4), at(5)]], 'still reporting what lies above, the newest range first');
    t.same(fills[1]!.blocks, [[at(6), at(8)]]);
  });
}
