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
 * serving the other flows rather than dropping all of them.
 *
 * Long-lived resources: a socket keeps the async context it was made in,
 * for its whole life. A pooled connection (the DoH agent's, an HTTP L7
 * pool's) is first dialled inside whichever flow needed it first, so
 * without care an error on it an hour later would fail that flow (or, once
 * it has ended, be blamed on it). Such resources are made through
 * `sharedScope(what, fn)` / `bindShared(what, fn)`, which run their code in
 * a context of their own: an error there is reported as the resource's
 * ("dns agent via direct"), never a flow's. And a flow that ended normally
 * is marked (`end()`), so what is still made in its context later is
 * reported as coming after it, not as its failure. Checks before
 * the Node APIs (src/wire/address-class.ts) keep the known causes from
 * getting this far; this is for the unknown ones.
 *
 * Per flow, not per packet: one object per flow (and a small array when it owns more than one thing).
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** The owner of a long-lived resource made on behalf of many flows (a pool, an agent). */
export class SharedScope {
  constructor(
    /** "dns agent via direct", for the log line. */
    readonly what: string,
  ) {}
}

export const flowScope = new AsyncLocalStorage<FlowGuard | SharedScope>();

/**
 * Runs fn in `what`'s own context, outside every flow's: what it makes (a
 * socket, a timer) reports its errors as `what`'s, whichever flow asked.
 */
export function sharedScope<R>(what: SharedScope, fn: () => R): R {
  return flowScope.run(what, fn);
}

/** fn, made to run in `what`'s own context wherever it is called from (a pool's connect callback). */
export function bindShared<A extends unknown[], R>(what: SharedScope, fn: (...args: A) => R): (...args: A) => R {
  return (...args: A) => flowScope.run(what, fn, ...args);
}

/** Where an error nobody's flow claims came from, for the log line. */
export interface ErrorSource {
  /** A shared resource's name (SharedScope.what). */
  resource?: string;
  /** The flow in whose context it ran, which had already ended or failed. */
  afterFlow?: string;
}

/** A flow's ends as its guard names them (FlowInfo is one): the text is built only when an error needs it (issue 10: no per-flow strings while idle). */
export interface FlowSubject {
  readonly network: string;
  readonly inbound: string;
  readonly src: string;
  readonly dst: string;
}

/** What a guard tears down: a stream or socket (destroyed), or a function. */
export type Closer = (() => void) | { destroy(): unknown };

function runCloser(c: Closer): void {
  try {
    if (typeof c === 'function') c();
    else c.destroy();
  } catch {
    // tearing down a failed flow: nothing more to do
  }
}

export class FlowGuard {
  failed = false;
  /** The flow ended normally (logged): later errors in its context are not its failure. */
  ended = false;
  /** The first own()'s closer alone, an array from the second (a relayed TUN flow holds one: its FlowInfo). */
  private closers: Closer | Closer[] | null = null;

  constructor(
    /** A fixed name, or the flow whose ends make it (see `what`). */
    private readonly subject: string | FlowSubject,
    private readonly onFail: (guard: FlowGuard, err: unknown) => void,
  ) {}

  /** "tcp tun 192.0.2.2:1234 -> 203.0.113.2:80", for the log line. */
  get what(): string {
    const s = this.subject;
    return typeof s === 'string' ? s : `${s.network} ${s.inbound} ${s.src} -> ${s.dst}`;
  }

  /** Something to close should the flow fail (run in order; their own errors are ignored): a function, or a stream to destroy (no closure per flow). */
  own(close: Closer): void {
    if (this.failed) {
      runCloser(close);
      return;
    }
    const held = this.closers;
    if (held === null) this.closers = close;
    else if (Array.isArray(held)) held.push(close);
    else this.closers = [held, close];
  }

  /** The flow ended normally: its closers are dropped, and later errors in its context are reported, not routed to it. */
  end(): void {
    this.ended = true;
    this.closers = null;
  }

  /** Ends the flow because its handling threw `err` (once). */
  fail(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    const closers = this.closers;
    this.closers = null;
    if (Array.isArray(closers)) for (const close of closers) runCloser(close);
    else if (closers !== null) runCloser(closers);
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
  /** An error no flow claims (one a flow claims goes to its guard's onFail); `source` says whose context it ran in. */
  unattributed(err: unknown, origin: 'uncaughtException' | 'unhandledRejection', source: ErrorSource): void;
}

/**
 * Installs the process-wide handlers that route uncaught errors to their
 * flow's guard. Returns the function that removes them again.
 */
export function installErrorBoundary(hooks: ErrorBoundaryHooks): () => void {
  const route = (err: unknown, origin: 'uncaughtException' | 'unhandledRejection'): void => {
    const owner = flowScope.getStore();
    if (owner instanceof SharedScope) return hooks.unattributed(err, origin, { resource: owner.what });
    if (owner === undefined) return hooks.unattributed(err, origin, {});
    // A second error from a failed flow, or one from something still
    // running in the context of a flow that has ended, is reported, never
    // routed to it.
    if (owner.failed || owner.ended) return hooks.unattributed(err, origin, { afterFlow: owner.what });
    owner.fail(err);
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
