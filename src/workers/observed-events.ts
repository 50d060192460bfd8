/**
 * A worker engine's observer events (src/engine/observer.ts: flow ends,
 * dials, sniffs, DNS upstream lookups) on their way to the main thread's
 * metrics, as numbers: each event is STRIDE slots of one Float64Array, and
 * its texts (outbound, close reason, failure, protocol) are indexes into the
 * report's own list of distinct strings. A connection-per-request load
 * makes three events per flow (its dial, its sniff, its end); as objects
 * each was a structured clone of its own on both threads (issue 10: the
 * worker mode's per-connection cost). A Float64Array crosses as one copy of
 * its bytes, and a few dozen flows of one report share one copy of each
 * text.
 */
import type { EndedFlow, EngineObserver, SniffOutcome } from '../engine/observer.js';

/** Slots per event: kind and up to seven values. */
const STRIDE = 8;
const FLOW = 0;
const DIAL = 1;
const SNIFF = 2;
const DNS = 3;

/** What crosses in a report: the events' numbers and the texts they index. */
export interface ObservedBatch {
  nums: Float64Array;
  strings: string[];
}

export const NO_EVENTS: ObservedBatch = { nums: new Float64Array(0), strings: [] };

/** The worker's side: an EngineObserver that writes each event into the batch (at most `max` events a report; more are dropped: the metrics then undercount, never block). */
export class ObservedRecorder implements EngineObserver {
  private nums: Float64Array;
  private n = 0;
  private strings: string[] = [];
  private readonly index = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly onEvent: () => void,
  ) {
    this.nums = new Float64Array(STRIDE * 64);
  }

  get size(): number {
    return this.n / STRIDE;
  }

  flowEnded(f: EndedFlow): void {
    const o = this.slot(FLOW);
    if (o < 0) return;
    const a = this.nums;
    a[o + 1] = f.network === 'udp' ? 1 : 0;
    a[o + 2] = f.inbound === 'tproxy' ? 1 : 0;
    a[o + 3] = this.text(f.outbound);
    a[o + 4] = this.text(f.close);
    a[o + 5] = f.bytesUp;
    a[o + 6] = f.bytesDown;
    a[o + 7] = f.durationMs;
  }

  dialed(outbound: string, seconds: number, failure: Error | null): void {
    const o = this.slot(DIAL);
    if (o < 0) return;
    this.nums[o + 1] = this.text(outbound);
    this.nums[o + 2] = seconds;
    this.nums[o + 3] = failure === null ? -1 : this.text(failure.message);
  }

  sniffed(protocol: string | null, outcome: SniffOutcome): void {
    const o = this.slot(SNIFF);
    if (o < 0) return;
    this.nums[o + 1] = protocol === null ? -1 : this.text(protocol);
    this.nums[o + 2] = this.text(outcome);
  }

  /** The main thread counts reloads itself. */
  reloaded(): void {}

  readonly dnsUpstream = (seconds: number, ok: boolean): void => {
    const o = this.slot(DNS);
    if (o < 0) return;
    this.nums[o + 1] = seconds;
    this.nums[o + 2] = ok ? 1 : 0;
  };

  /** The events since the last take, and a fresh start. */
  take(): ObservedBatch {
    if (this.n === 0) return NO_EVENTS;
    const batch = { nums: this.nums.slice(0, this.n), strings: this.strings };
    this.n = 0;
    this.strings = [];
    this.index.clear();
    return batch;
  }

  /** The offset of a new event of `kind`, -1 when the batch is full. */
  private slot(kind: number): number {
    this.onEvent();
    if (this.n >= this.max * STRIDE) return -1;
    if (this.n + STRIDE > this.nums.length) {
      const grown = new Float64Array(Math.min(this.nums.length * 2, this.max * STRIDE));
      grown.set(this.nums);
      this.nums = grown;
    }
    const o = this.n;
    this.n += STRIDE;
    this.nums[o] = kind;
    return o;
  }

  private text(s: string): number {
    let i = this.index.get(s);
    if (i === undefined) {
      i = this.strings.length;
      this.strings.push(s);
      this.index.set(s, i);
    }
    return i;
  }
}

/** The main thread's side: each event of `b`, into the main thread's metrics. */
export function replayObserved(b: ObservedBatch, engine: EngineObserver | null, dnsUpstream: ((seconds: number, ok: boolean) => void) | null): void {
  const a = b.nums;
  const s = b.strings;
  const f: EndedFlow = { network: 'tcp', inbound: 'tun', outbound: '', close: '', bytesUp: 0, bytesDown: 0, durationMs: 0 };
  for (let o = 0; o + STRIDE <= a.length; o += STRIDE) {
    const kind = a[o];
    if (kind === FLOW) {
      if (engine === null) continue;
      f.network = a[o + 1] === 1 ? 'udp' : 'tcp';
      f.inbound = a[o + 2] === 1 ? 'tproxy' : 'tun';
      f.outbound = s[a[o + 3]!]!;
      f.close = s[a[o + 4]!]!;
      f.bytesUp = a[o + 5]!;
      f.bytesDown = a[o + 6]!;
      f.durationMs = a[o + 7]!;
      engine.flowEnded(f);
    } else if (kind === DIAL) {
      const failure = a[o + 3]!;
      engine?.dialed(s[a[o + 1]!]!, a[o + 2]!, failure < 0 ? null : new Error(s[failure]!));
    } else if (kind === SNIFF) {
      const p = a[o + 1]!;
      engine?.sniffed(p < 0 ? null : s[p]!, s[a[o + 2]!]! as SniffOutcome);
    } else if (kind === DNS) dnsUpstream?.(a[o + 1]!, a[o + 2] === 1);
  }
}
