/**
 * A transmit batch: packets packed as records into one preallocated buffer,
 * written to the device by one native call (or handed to a sink in tests).
 */
import { InvalidStateError } from '../errors.js';
import { readRecordLength, recordSize, writeRecordLength } from './records.js';

export interface TxSink {
  /** Writes `count` records from `buf`; returns how many the device took. */
  writeRecords(buf: Uint8Array, count: number, end: number): number;
}

export class TxBatch {
  readonly buffer: Uint8Array;
  private end = 0;
  private count = 0;
  private reservedAt = -1;
  /** Packets the device refused (EINVAL, queue full): counted, never thrown. */
  dropped = 0;
  packets = 0;
  bytes = 0;

  constructor(
    capacity: number,
    private readonly sink: TxSink,
  ) {
    this.buffer = new Uint8Array(capacity);
  }

  get pending(): number {
    return this.count;
  }

  reserve(maxLen: number): number {
    if (this.end + recordSize(maxLen) > this.buffer.length) {
      this.flush();
      if (recordSize(maxLen) > this.buffer.length) throw new RangeError(`packet of ${maxLen} bytes exceeds the transmit buffer`);
    }
    this.reservedAt = this.end;
    return this.end + 4;
  }

  commit(len: number): void {
    const at = this.reservedAt;
    if (at < 0) throw new InvalidStateError('TxBatch.commit without reserve');
    writeRecordLength(this.buffer, at, len);
    this.end = at + recordSize(len);
    this.count++;
    this.bytes += len;
    this.reservedAt = -1;
  }

  flush(): void {
    if (this.count === 0) return;
    const written = this.sink.writeRecords(this.buffer, this.count, this.end);
    this.packets += written;
    this.dropped += this.count - written;
    this.count = 0;
    this.end = 0;
  }
}

/** Walks records: calls fn(buf, off, len) for each; test and tooling helper. */
export function forEachRecord(
  buf: Uint8Array,
  count: number,
  fn: (buf: Uint8Array, off: number, len: number) => void,
): void {
  let off = 0;
  for (let i = 0; i < count; i++) {
    const len = readRecordLength(buf, off);
    fn(buf, off + 4, len);
    off += recordSize(len);
  }
}
