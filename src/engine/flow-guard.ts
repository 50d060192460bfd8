/**
 * The last line of defence: an error thrown in one flow's handling ends
 * that flow, never the process.
 *
 * Every flow the engine takes (TCP and UDP, from the TUN or a TPROXY
 * listener) gets a FlowGuard holding what must be torn down should its
 * handling fail (the client side's stream or session, the upstream once it
 * exists). Synchronous errors are caught where the engine's handlers run
 * (the stack or a socket calls them). Asynchronous ones (a throw in a
 * promise continuation, a timer, a socket callback) reach the process's
 * `uncaughtException` / `unhandledRejection` events; the engine runs each
 * flow's set-up inside `flowScope.run(guard, ...)`, so every timer, promise
 * and socket made for the flow carries its guard as the async context
 * (AsyncLocalStorage), and the process handler knows whose error it is.
 *
 * An error outside every flow (none of the engine's doing, or a callback
 * that lost its context) is logged with its stack and counted; sluice keeps
 * serving the other flows rather than dropping all of them. Checks before
 * the Node APIs (src/wire/address-class.ts) keep the known causes from
 * getting this far; this is for the unknown ones.
 *
 * Per flow, not per packet: one object and one small array per flow.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export const flowScope = new AsyncLocalStorage<FlowGuard>();

export class FlowGuard {
  failed = false;
  private readonly closers: Array<() => void> = [];

  constructor(
    /** "tcp tun 192.0.2.2:1234 -> 203.0.113.2:80", for the log line. */
    readonly what: string,
    private readonly onFail: (guard: FlowGuard, err: unknown) => void,
  ) {}

  /** Something to close should the flow fail (run in order; their own errors are ignored). */
  own(close: () => void): void {
    if (this.failed) {
      try {
        close();
      } catch {
        // tearing down a failed flow: nothing more to do
      }
      return;
    }
    this.closers.push(close);
  }

  /** Ends the flow because its handling threw `err` (once). */
  fail(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    for (const close of this.closers.splice(0)) {
      try {
        close();
      } catch {
        // tearing down a failed flow: nothing more to do
      }
    }
    this.onFail(this, err);
  }

  /** Runs fn in this flow's async context; a synchronous throw fails the flow. */
  run(fn: () => void): void {
    flowScope.run(this, runGuarded, this, fn);
  }
}

function runGuarded(guard: FlowGuard, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    guard.fail(err);
  }
}

export interface ErrorBoundaryHooks {
  /** An error no flow claims (one a flow claims goes to its guard's onFail). */
  unattributed(err: unknown, origin: 'uncaughtException' | 'unhandledRejection'): void;
}

/**
 * Installs the process-wide handlers that route uncaught errors to their
 * flow's guard. Returns the function that removes them again.
 */
export function installErrorBoundary(hooks: ErrorBoundaryHooks): () => void {
  const route = (err: unknown, origin: 'uncaughtException' | 'unhandledRejection'): void => {
    const guard = flowScope.getStore();
    // A second error from a flow already ended (or from a long-lived
    // resource first made inside a flow, such as a resolver socket) is
    // still reported, as unattributed.
    if (guard !== undefined && !guard.failed) {
      guard.fail(err);
      return;
    }
    hooks.unattributed(err, origin);
  };
  const onException = (err: Error): void => route(err, 'uncaughtException');
  const onRejection = (reason: unknown): void => route(reason, 'unhandledRejection');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}

/** The error's stack (or text) for a log line, bounded. */
export function errorText(err: unknown): string {
  const s = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
  return s.length > 2000 ? `${s.slice(0, 2000)}...` : s;
}
