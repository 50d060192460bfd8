/**
 * What the stack's layers (src/ip/input.ts, src/ip/icmp.ts,
 * src/tcp/forwarder.ts, src/udp/sessions.ts) share with the driver that
 * owns them (src/stack.ts): the clock reading of this turn, the counters,
 * the packet writer, the one timer wheel, and the driver's turn machinery.
 * One implementation (Stack), so every call site stays monomorphic.
 */
import type { TimerWheel, WheelEntry } from './timer-wheel.js';
import type { DropReason, StackStats } from './counters.js';
import type { PacketWriter } from './packet-writer.js';
import type { TcpFlow } from './tcp-flow.js';

export interface StackDriver {
  /** The clock as of this batch or timer turn (ms). */
  readonly now: number;
  readonly stats: StackStats;
  readonly writer: PacketWriter;
  readonly wheel: TimerWheel<WheelEntry>;
  /** Inside onBatch: dispatch and the flush wait for the end of the batch. */
  readonly inBatch: boolean;
  readonly closed: boolean;
  /** Counts a dropped packet under its reason (and tells a tracer, when one listens). */
  drop(reason: DropReason): void;
  /** Re-arms the one timer for the earliest deadline. */
  armTimer(): void;
  /** Runs the dirty list and flushes the link soon (a microtask), when outside a batch. */
  scheduleFlush(): void;
  /** Queues a flow for stream notifications and dispatch at the end of this turn. */
  markDirty(flow: TcpFlow): void;
  /** Lets the flow's connection emit what is due now, inside a batch (an ACK owed for an out-of-order segment; TcpConnection.owesSackAck). */
  dispatchNow(flow: TcpFlow): void;
  /** Reads the clock into `now` (for calls from the application, outside a turn). */
  refreshNow(): number;
}
