/**
 * What the engine tells an observer (the Prometheus metrics,
 * src/control/metrics.ts) about each flow, dial and sniff: called once per
 * event, never per packet, and only when an observer is set (one null check).
 */

/** A flow's outcome, a bounded label (from the flow line's close reason). */
export type FlowResult = 'ok' | 'closed' | 'rejected' | 'dropped' | 'upstream_failed' | 'client_gone' | 'unknown_fakeip' | 'bad_target' | 'shutdown' | 'error';

export interface EndedFlow {
  network: 'tcp' | 'udp';
  inbound: 'tun' | 'tproxy';
  /** '' when the flow ended before it was routed. */
  outbound: string;
  close: string;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
}

export type SniffOutcome = 'found' | 'not_found' | 'timeout' | 'closed';

export interface EngineObserver {
  flowEnded(f: EndedFlow): void;
  /** One upstream dial of `outbound` took `seconds`; `failure` is the error message or null. */
  dialed(outbound: string, seconds: number, failure: Error | null): void;
  /** The first bytes of a flow were sniffed; protocol null when none was recognised. */
  sniffed(protocol: string | null, outcome: SniffOutcome): void;
  /** A reload of the policy (SIGHUP, the API) succeeded or failed. */
  reloaded(ok: boolean): void;
}

/** The bounded result label of a flow line's close reason. */
export function flowResult(close: string): FlowResult {
  if (close === 'rejected') return 'rejected';
  if (close === 'dropped') return 'dropped';
  if (close === 'shutdown') return 'shutdown';
  if (close === 'unknown fake-ip') return 'unknown_fakeip';
  if (close === 'bad target') return 'bad_target';
  if (close === 'error') return 'error';
  if (close === 'closed by API') return 'closed';
  if (close.startsWith('upstream failed') || close.startsWith('outbound ')) return 'upstream_failed';
  if (close.startsWith('client gone')) return 'client_gone';
  return 'ok';
}
