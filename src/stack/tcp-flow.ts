/**
 * One TCP flow in the stack: the flow-table key, the timer-wheel entry, the
 * owner of the sans-IO TcpConnection, and the bridge to the application's
 * side of it (a FlowApp: its TcpStream, or a relay that drives the
 * connection itself, src/engine/socket-relay.ts).
 *
 * Connection callbacks (ConnectionOwner) run inside process()/dispatch() and
 * only set flags and queue the flow; the stack runs the stream side after
 * the whole batch (ENGINEERING.md: owners must not re-enter the core).
 */
import { SluiceError } from '../errors.js';
import type { FlowKey } from '../ip/flow-table.js';
import type { WheelEntry } from './timer-wheel.js';
import type { TcpConnectionCounts } from './counters.js';
import type { ConnectionOwner, TcpConnection } from '../tcp/connection.js';
import { TcpStream, type FlowEndpoints } from './tcp-stream.js';

/** What a flow needs from the stack that owns it. */
export interface FlowHost {
  /** Queue the flow for dispatch (and stream notifications) after this turn. */
  markDirty(flow: TcpFlow): void;
  /** The connection reached CLOSED: forget the flow. */
  flowClosed(flow: TcpFlow): void;
  /** A half-open (SYN-RECEIVED) flow completed its handshake. */
  handshakeDone(flow: TcpFlow): void;
  /** The stack's running loss counts, which the flow's connection adds to (ConnectionOwner.tcpTotals). */
  readonly tcpTotals: TcpConnectionCounts;
}

/** A flow's addresses before setFlowAddresses ran. */
const NO_ADDRESS = new Uint8Array(16);

export type TcpCloseReason = 'fin' | 'reset' | 'timeout' | 'aborted';

/**
 * The application's side of an accepted flow, told after each batch what
 * the connection did (TcpFlow.deliverNotifications). It reads and writes
 * the connection (flow.connection) itself; once it lets go of the flow it
 * calls flow.appGone.
 */
export interface FlowApp {
  /** The receive ring has bytes, or the peer's FIN came (flow.peerFinished). */
  flowReadable(): void;
  /** The peer acknowledged data: the send ring has room again. */
  flowWritable(): void;
  /** The connection is closed (flow.closedReason says how); the flow leaves the table after this. */
  flowClosed(reason: TcpCloseReason): void;
}

export class TcpFlowError extends SluiceError {
  constructor(
    message: string,
    readonly code: 'ECONNRESET' | 'ETIMEDOUT' | 'ECONNABORTED',
  ) {
    super(message);
  }
}

export class TcpFlow implements FlowKey, WheelEntry, ConnectionOwner {
  // FlowKey
  readonly family: number;
  readonly protocol = 6;
  /** Set once from the first segment (setFlowAddresses): IPv4 ones are shared by every flow of that address, never written. */
  srcAddr: Uint8Array = NO_ADDRESS;
  dstAddr: Uint8Array = NO_ADDRESS;
  srcPort: number;
  dstPort: number;
  nextInBucket: FlowKey | null = null;
  flowHash = 0;
  // WheelEntry
  wheelDeadline = Infinity;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  wheelSlot = -1;
  /** IPv4 addresses as int32 for the emitter (0 for IPv6; setFlowAddresses). */
  src4 = 0;
  dst4 = 0;

  connection: TcpConnection | null = null;
  /** The application's side once accepted (openStream, attach); null again once it let go (appGone). */
  app: FlowApp | null = null;
  endpoints: FlowEndpoints | null = null;
  /** Intrusive link of the stack's dirty list. */
  nextDirty: TcpFlow | null = null;
  inDirtyList = false;
  // Notifications from the connection, handled after the batch.
  notifyReadable = false;
  notifyWritable = false;
  peerFinished = false;
  closedReason: TcpCloseReason | null = null;
  /** Counted in the stack's half-open total (SYN-RECEIVED, our SYN-ACK unanswered). */
  halfOpen = false;
  /**
   * A handshake completed by a SYN cookie waits for the application's
   * decision with its connection already open: by this time it is refused
   * (Infinity once decided, and for every other flow).
   */
  decisionDeadline = Infinity;
  private readonly host: FlowHost;

  constructor(host: FlowHost, family: number, srcPort: number, dstPort: number) {
    this.host = host;
    this.family = family;
    this.srcPort = srcPort;
    this.dstPort = dstPort;
  }

  markDirty(): void {
    this.host.markDirty(this);
  }

  /** ConnectionOwner: the stack's running loss counts. */
  get tcpTotals(): TcpConnectionCounts {
    return this.host.tcpTotals;
  }

  /** Creates the stream the application reads and writes. */
  openStream(): TcpStream {
    const stream = new TcpStream(this, this.endpoints!);
    this.attach(stream);
    return stream;
  }

  /** Hands the accepted flow to `app` (which carries the flow's ends from now on, if it needs them: one object fewer per flow). */
  attach(app: FlowApp): void {
    this.app = app;
    this.endpoints = null;
  }

  // --- ConnectionOwner (called inside the core; flags only) ---
  onEstablished(): void {
    if (this.halfOpen) {
      this.halfOpen = false;
      this.host.handshakeDone(this);
    }
  }

  onReadable(): void {
    this.notifyReadable = true;
    this.host.markDirty(this);
  }

  onWritable(): void {
    this.notifyWritable = true;
    this.host.markDirty(this);
  }

  onPeerFin(): void {
    this.peerFinished = true;
    this.notifyReadable = true;
    this.host.markDirty(this);
  }

  onClosed(_c: TcpConnection, reason: TcpCloseReason): void {
    this.closedReason = reason;
    this.host.markDirty(this);
  }

  // --- after the batch ---
  /** Runs stream-side work the core asked for. Returns true when the flow is finished. */
  deliverNotifications(): boolean {
    if (this.app !== null) {
      if (this.notifyReadable) {
        this.notifyReadable = false;
        this.app.flowReadable();
      }
      if (this.notifyWritable && this.app !== null) {
        this.notifyWritable = false;
        this.app.flowWritable();
      }
    }
    if (this.closedReason !== null) {
      if (this.app !== null) this.app.flowClosed(this.closedReason);
      this.host.flowClosed(this);
      return true;
    }
    return false;
  }

  closeError(): Error {
    switch (this.closedReason) {
      case 'timeout':
        return new TcpFlowError('connection timed out (peer stopped acknowledging)', 'ETIMEDOUT');
      case 'aborted':
        return new TcpFlowError('connection aborted', 'ECONNABORTED');
      case 'fin':
        return new TcpFlowError('connection closed', 'ECONNRESET');
      default:
        return new TcpFlowError('connection reset by peer', 'ECONNRESET');
    }
  }

  shutdownWrite(): void {
    if (this.connection !== null && this.closedReason === null) {
      this.connection.shutdownWrite();
      this.host.markDirty(this);
    }
  }

  /**
   * The application let go of the flow (its stream was destroyed, its relay
   * ended). After a graceful close of both directions the connection is
   * left to finish its close handshake (the flow stays in the table until
   * CLOSED, like an orphaned kernel socket); otherwise the peer is reset
   * (RFC 9293 3.10.4 ABORT) unless already closed.
   */
  appGone(graceful: boolean): void {
    if (this.connection !== null && this.closedReason !== null) this.connection.releaseReceiveBuffer();
    if (this.connection !== null && this.closedReason === null) {
      if (graceful) this.connection.shutdownWrite();
      else this.connection.abort();
      this.host.markDirty(this);
    }
    // Nothing is told to an application that let go: forget it, and with
    // it what hangs off it (the relay, the upstream socket, the flow's
    // record). A flow closed the orderly way stays in the table for its
    // TIME-WAIT (timeWaitMs): at thousands of connections a second, that
    // is thousands of flows, each of which kept ~3 KB reachable through it.
    this.app = null;
  }
}
