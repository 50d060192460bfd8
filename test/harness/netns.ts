/**
 * Network-namespace test harness.
 *
 * A `Lab` owns a set of namespaces named `sl<tag>-<pid>x<n>` and everything in
 * them (veth pairs, TUN devices, nftables tables, processes). Deleting a
 * namespace destroys every interface and firewall table inside it, so the
 * host's own routes, rules and firewall are never touched.
 *
 * Teardown runs on test end (pass or fail), on process exit and on
 * SIGINT/SIGTERM. A run killed with SIGKILL leaves namespaces behind; the next
 * `Lab.create` sweeps every `sl*` namespace whose owning PID (encoded in the
 * name) no longer exists.
 */
import { spawn as spawnChild, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import type { Test } from 'tap';

/** The subset of a tap Test the harness needs. */
export type TestLike = Pick<Test, 'teardown' | 'plan' | 'comment'>;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Resolve instead of reject on a non-zero exit status. */
  allowFail?: boolean;
  /** Kill the command after this many milliseconds (default 60 s). */
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
}

export class HarnessError extends Error {
  readonly code = 'SLUICE_HARNESS';
  constructor(message: string, readonly result?: ExecResult) {
    super(message);
  }
}

const NETNS_DIR = '/var/run/netns';
// The '-' ends the tag: without it a short tag ("relay") would swallow the
// first digits of the PID and the sweep would read a wrong, dead PID and
// delete a running test's namespaces.
const NAME_PATTERN = /^sl([a-z0-9]{0,8})-(\d+)x(\d+)$/;

/**
 * Returns true when the harness can run (root, iproute2 present). Otherwise
 * skips the test with a reason, except under CI, where missing privileges
 * are an error: CI runs as root and must run these tests.
 */
export function requireRoot(t: TestLike): boolean {
  const reason =
    typeof process.getuid === 'function' && process.getuid() !== 0
      ? 'needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces)'
      : !existsSync('/dev/net/tun')
        ? 'needs /dev/net/tun (load the tun module)'
        : !hasCommand('ip')
          ? 'needs iproute2 (`ip`)'
          : null;
  if (reason === null) return true;
  if (process.env.CI === 'true') throw new HarnessError(`integration test cannot run under CI: ${reason}`);
  t.plan(0, reason);
  return false;
}

export function hasCommand(name: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir !== '' && existsSync(`${dir}/${name}`)) return true;
  }
  return false;
}

function run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new HarnessError(`${argv.join(' ')}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      if (result.code !== 0 && !opts.allowFail) {
        reject(
          new HarnessError(
            `command failed (${signal ?? `exit ${code}`}): ${argv.join(' ')}\n${stderr.trim() || stdout.trim()}`,
            result,
          ),
        );
      } else {
        resolve(result);
      }
    });
    // A command that exits before reading its input (ip -batch on an error)
    // must surface its own message, not an EPIPE from our write.
    child.stdin!.on('error', () => {});
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/** One network namespace of a lab. */
export class Netns {
  constructor(
    readonly lab: Lab,
    readonly name: string,
  ) {}

  /** Runs argv inside the namespace. */
  exec(argv: string[], opts?: ExecOptions): Promise<ExecResult> {
    return run(['ip', 'netns', 'exec', this.name, ...argv], opts);
  }

  /** Runs a shell script inside the namespace; resolves with its stdout. */
  async sh(script: string, opts?: ExecOptions): Promise<string> {
    return (await this.exec(['sh', '-ec', script], opts)).stdout;
  }

  /** Applies `ip -batch` commands atomically-ish (one process, stops at the first error). */
  async ipBatch(lines: string[]): Promise<void> {
    await run(['ip', '-n', this.name, '-batch', '-'], { input: lines.join('\n') + '\n' });
  }

  /**
   * Starts a long-running process inside the namespace. It is killed by PID
   * at teardown (SIGTERM, then SIGKILL after a grace period).
   */
  spawn(argv: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawnChild('ip', ['netns', 'exec', this.name, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...opts,
    });
    this.lab.track(child);
    return child;
  }
}

const liveLabs = new Set<Lab>();
let exitHooksInstalled = false;
let labCounter = 0;

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', () => {
    for (const lab of liveLabs) lab.teardownSync();
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      for (const lab of liveLabs) lab.teardownSync();
      process.kill(process.pid, signal);
    });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces left by harness runs that died without teardown (kill -9). */
export function sweepStaleNamespaces(): string[] {
  if (!existsSync(NETNS_DIR)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(NETNS_DIR)) {
    const m = NAME_PATTERN.exec(name);
    if (m === null) continue;
    if (pidAlive(Number(m[2]))) continue;
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      removed.push(name);
    } catch {
      // Gone already or still busy; the next sweep retries.
    }
  }
  return removed;
}

/** A set of namespaces and processes torn down together. */
export class Lab {
  private readonly namespaces: Netns[] = [];
  private readonly children = new Set<ChildProcess>();
  private readonly tag: string;
  private readonly id: number;
  private torn = false;

  private constructor(tag: string) {
    this.tag = tag.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 8);
    this.id = labCounter++;
  }

  /** Creates a lab whose teardown is bound to the test `t`. */
  static async create(t: TestLike, tag = 'lab'): Promise<Lab> {
    installExitHooks();
    sweepStaleNamespaces();
    const lab = new Lab(tag);
    liveLabs.add(lab);
    t.teardown(() => lab.teardown());
    return lab;
  }

  /** Creates a namespace with loopback up. `label` only helps reading. */
  async netns(label: string): Promise<Netns> {
    const name = `sl${this.tag}-${process.pid}x${this.id * 100 + this.namespaces.length}`;
    await run(['ip', 'netns', 'add', name]);
    const ns = new Netns(this, name);
    this.namespaces.push(ns);
    await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    // Duplicate address detection keeps new link-local addresses tentative
    // for about a second, which stalls the first IPv6 packets of a test.
    await ns.sh('sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0');
    void label;
    return ns;
  }

  /**
   * Creates a veth pair with one end in each namespace, both up. Addresses
   * are optional CIDR strings (documentation ranges only).
   */
  async veth(
    a: Netns,
    ifA: string,
    b: Netns,
    ifB: string,
    addr: { a?: string[]; b?: string[]; mtu?: number } = {},
  ): Promise<void> {
    await run(['ip', '-n', a.name, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
    for (const [ns, ifname, addrs] of [
      [a, ifA, addr.a ?? []],
      [b, ifB, addr.b ?? []],
    ] as const) {
      const lines = addrs.map((cidr) => `addr add ${cidr} dev ${ifname}${cidr.includes(':') ? ' nodad' : ''}`);
      if (addr.mtu !== undefined) lines.push(`link set ${ifname} mtu ${addr.mtu}`);
      lines.push(`link set ${ifname} up`);
      await ns.ipBatch(lines);
    }
  }

  track(child: ChildProcess): void {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
  }

  /** Kills tracked processes by PID, then deletes the namespaces. */
  async teardown(): Promise<void> {
    if (this.torn) return;
    this.torn = true;
    liveLabs.delete(this);
    const exits: Promise<void>[] = [];
    for (const child of this.children) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      exits.push(
        new Promise<void>((resolve) => {
          const hard = setTimeout(() => child.kill('SIGKILL'), 2000);
          child.once('exit', () => {
            clearTimeout(hard);
            resolve();
          });
          child.kill('SIGTERM');
        }),
      );
    }
    await Promise.all(exits);
    for (const ns of this.namespaces.reverse()) {
      await run(['ip', 'netns', 'del', ns.name], { allowFail: true });
    }
  }

  /** Synchronous teardown for process exit and signals. */
  teardownSync(): void {
    if (this.torn) return;
    this.torn = true;
    liveLabs.delete(this);
    for (const child of this.children) {
      if (child.pid !== undefined && child.exitCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
    for (const ns of this.namespaces) {
      try {
        execFileSync('ip', ['netns', 'del', ns.name], { stdio: 'ignore' });
      } catch {
        // Already gone.
      }
    }
  }
}

/**
 * Resolves with the first JSON line on `child`'s stdout for which `predicate`
 * holds; rejects on timeout or exit. Fixtures report over stdout this way.
 */
export function waitForJsonLine<T = Record<string, unknown>>(
  child: ChildProcess,
  predicate: (msg: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let stderr = '';
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let msg: T;
        try {
          msg = JSON.parse(line) as T;
        } catch {
          continue;
        }
        if (predicate(msg)) {
          cleanup();
          resolve(msg);
          return;
        }
      }
    };
    const onErr = (chunk: Buffer): void => {
      stderr += chunk.toString('utf8');
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new HarnessError(`fixture exited (${code}) before the expected line; stderr:\n${stderr}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new HarnessError(`timed out after ${timeoutMs} ms waiting for a fixture line; stderr:\n${stderr}`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onErr);
    child.once('exit', onExit);
  });
}
