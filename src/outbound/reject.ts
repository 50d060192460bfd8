/**
 * Blocking outbounds. They never connect: the engine checks `action` and
 * answers the client itself, before any async work:
 * - `reject`: TCP gets a RST for its SYN, UDP an ICMP/ICMPv6 port
 *   unreachable, so the client fails at once;
 * - `drop`: nothing is sent; the client's SYN / datagrams vanish and it
 *   times out on its own.
 * Their connectTcp / openUdp reject with REJECTED / DROPPED errors carrying
 * the same reaction, for callers that treat every outbound alike.
 */
import type { Duplex } from 'node:stream';
import { OutboundError, OutboundErrorCode } from './errors.js';
import type { ClientReaction } from './errors.js';
import type { Outbound, OutboundAction, Target, UdpAssociation } from './types.js';

/** What the engine does with a flow routed to `outbound`, without awaiting anything. */
export function blockingReaction(outbound: Outbound): ClientReaction | null {
  switch (outbound.action) {
    case 'reject':
      return 'rst';
    case 'drop':
      return 'drop';
    default:
      return null;
  }
}

abstract class BlockingOutbound implements Outbound {
  readonly name: string;
  abstract readonly type: 'reject' | 'drop';
  abstract readonly action: Exclude<OutboundAction, 'connect'>;
  readonly supportsUdp = true;

  constructor(name: string) {
    this.name = name;
  }

  protected abstract error(): OutboundError;

  connectTcp(_target: Target, _signal?: AbortSignal): Promise<Duplex> {
    return Promise.reject(this.error());
  }

  openUdp(): Promise<UdpAssociation> {
    return Promise.reject(this.error());
  }
}

export class RejectOutbound extends BlockingOutbound {
  readonly type = 'reject' as const;
  readonly action = 'reject' as const;
  protected error(): OutboundError {
    return new OutboundError(OutboundErrorCode.REJECTED, 'rejected by policy', { outbound: this.name });
  }
}

export class DropOutbound extends BlockingOutbound {
  readonly type = 'drop' as const;
  readonly action = 'drop' as const;
  protected error(): OutboundError {
    return new OutboundError(OutboundErrorCode.DROPPED, 'dropped by policy', { outbound: this.name });
  }
}
