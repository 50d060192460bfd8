/**
 * SIGTERM at every 50 ms step of `sluice run`'s start-up (issue 12 item 9):
 * each time the process exits 0 within 5 s and the gateway namespace's
 * state is exactly what it was before: ip rules and routes (all tables,
 * both families), the nftables ruleset, tc qdiscs and filters, and every
 * forwarding sysctl, the per-interface ones included (conf.wan0.forwarding
 * and the IPv6 conf.lan0.forwarding are 1 before start while the globals
 * are 0, so a global write that resets them shows).
 *
 * The steps are counted from the moment the process can take a signal
 * without dying: bin/sluice.js's first statements catch SIGHUP, which
 * node itself does not, so once the process runs node, bit 0 of SigCgt in
 * /proc/PID/status says the launcher's handlers are in place (sluice is
 * started without tap's NODE_OPTIONS, whose signal-exit catches SIGHUP too). A calibration run measures the time
 * from there to "ready"; the steps cover it (at most 40), plus one after ready.
 *
 * Modes: gateway mode tun, gateway mode tproxy (nftables TPROXY rules,
 * the transparent TCP and UDP listeners), gateway mode tproxy-ebpf (the TC
 * program on lan0 assigning flows to those listeners), and the eBPF
 * classifier on lan0; then gateway mode tproxy again under CPU load (a
 * busy loop per core), in steps of 100 ms.
 *
 * Each step's time is from the signal to the exit (the process's hard
 * deadline counts from the signal too), and the orderly path must have
 * done it: no "stop deadline" line.
 *
 * Needs root, /dev/net/tun, ip, nft, tc, a kernel that loads eBPF.
 */
import t from 'tap';
import { holdCpuLock } from '../fixtures/cpu-lock.js';
import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import type { Test } from 'tap';
import { requireRoot, type Netns } from '../harness/netns.js';
import { threeNamespaces } from '../harness/topology.js';
import { createLab, requireCommands, tempDir, TUN, type Engine } from '../fixtures/engine/lab.js';
import { fullSnapshot, settle, sluiceDown, spawnSluice } from './workstation.js';

const STEP_MS = 50;
const MAX_STEPS = Number(process.env.SLUICE_STOP_STEPS ?? 40);
const STOP_BUDGET_MS = 5000;
const LOAD_STEP_MS = 100;

const COMMON = `
log: { level: info, format: json }
tun: { name: ${TUN} }
dns: { mode: real-ip, hijack: false, fakeIp: { persistPath: null }, upstreams: [ { address: "udp://203.0.113.2:53" } ] }
route: { table: 2022, priority: 9000 }
`;

const MODES = [
  { name: 'gateway mode tun', yaml: `${COMMON}gateway: { enabled: true, lan: [lan0], mode: tun }\n`, installed: 'gateway installed', lab: 'stopupgw' },
  { name: 'gateway mode tproxy', yaml: `${COMMON}gateway: { enabled: true, lan: [lan0], mode: tproxy }\n`, installed: 'gateway installed', lab: 'stopuptp' },
  { name: 'gateway mode tproxy-ebpf', yaml: `${COMMON}gateway: { enabled: true, lan: [lan0], mode: tproxy-ebpf }\n`, installed: 'gateway installed', lab: 'stopupte' },
  { name: 'classifier on lan0', yaml: `${COMMON}classifier: { enabled: true, interfaces: [lan0] }\n`, installed: 'classifier attached', lab: 'stopupcl' },
];

let lastSeen = '';
/**
 * Resolves once the launcher's handlers are installed (SIGHUP caught), with
 * performance.now() then. The command line is read first: between fork and
 * exec the child still carries the test process's own handlers.
 */
async function handlersInstalled(engine: Engine): Promise<number> {
  const pid = engine.proc.pid!;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.startsWith(`${process.execPath}\0`) && cmdline.includes('sluice.js')) {
        const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
        if (m !== null && (BigInt(`0x${m[1]!}`) & 1n) === 1n) {
          lastSeen = m![1]!;
          return performance.now();
        }
      }
    } catch {
      // not there yet, or gone
    }
    if (!engine.running) throw new Error(`sluice exited before installing its handlers\n${engine.transcript()}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error('sluice did not install its signal handlers within 20 s');
}

/**
 * CPU load for the run under load: one busy loop per core (node children,
 * ended by PID at teardown), so every start-up step and the stop compete
 * for the CPU with them.
 */
function startLoad(t: Test): void {
  const n = Math.max(1, availableParallelism());
  const busy: ChildProcess[] = [];
  for (let i = 0; i < n; i++) busy.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore', env: { ...process.env, NODE_OPTIONS: '' } }));
  t.teardown(() => {
    for (const b of busy) if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL');
  });
}

async function runMode(t: Test, gateway: Netns, dir: string, mode: (typeof MODES)[number], before: string, stepMs = STEP_MS): Promise<void> {
  const state = path.join(dir, 'state.json');
  // Calibration: how long start-up takes, from the handlers to "ready".
  const cal = spawnSluice(t, gateway, dir, mode.yaml, state);
  const h0 = await handlersInstalled(cal);
  await cal.waitFor((l) => l.msg === 'ready', 20_000, '"ready"');
  const readyMs = performance.now() - h0;
  t.ok(cal.lines.some((l) => l.msg === mode.installed), `calibration run: "${mode.installed}"`);
  t.equal((await cal.stop()).code, 0, 'calibration run stops with 0');
  t.equal(await fullSnapshot(gateway), before, 'calibration run: state restored');
  const steps = Math.min(MAX_STEPS, Math.ceil(readyMs / stepMs) + 1);
  t.comment(`${mode.name}: ready ${Math.round(readyMs)} ms after the handlers; ${steps + 1} steps of ${stepMs} ms`);

  const reached = new Map<string, number>();
  let slowest = 0;
  for (let k = 0; k <= steps; k++) {
    const at = k * stepMs;
    const engine = spawnSluice(t, gateway, dir, mode.yaml, state);
    const h = await handlersInstalled(engine);
    const wait = at - (performance.now() - h);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const t0 = performance.now();
    engine.proc.kill('SIGTERM');
    const hard = setTimeout(() => engine.proc.kill('SIGKILL'), 15_000);
    const exit = await engine.exited;
    clearTimeout(hard);
    // From the signal (not from when the stop began) to the exit.
    const ms = Math.round(performance.now() - t0);
    slowest = Math.max(slowest, ms);
    const last = [...engine.lines].reverse().find((l) => l.msg !== 'stopped' && l.msg !== 'stopping' && l.msg !== 'stopping during start-up' && !/removed|detached/.test(String(l.msg)))?.msg ?? '(before the first line)';
    reached.set(String(last), (reached.get(String(last)) ?? 0) + 1);
    const label = `${mode.name}, SIGTERM ${at} ms into start-up (last step logged: ${last})`;
    const exact = (await fullSnapshot(gateway)) === before;
    // The orderly path did it: the hard deadline (4 s after the signal) did not have to.
    const forced = engine.lines.some((l) => l.msg === 'stop deadline: exiting with resources still open');
    // One assertion per step keeps the output readable; the details go in the message on failure.
    const ok = exit.code === 0 && exit.signal === null && ms < STOP_BUDGET_MS && exact && !existsSync(state) && !forced;
    t.ok(ok, `${label}: exit ${exit.code ?? exit.signal} ${ms} ms after the signal, state ${exact ? 'restored' : 'NOT restored'}${forced ? ', FORCED by the deadline' : ''} (SigCgt ${lastSeen})`, exact ? {} : { diff: await fullSnapshot(gateway), before });
    // Where the time went, for the next reader: the run's own lines, with their times.
    if (!ok) t.comment(engine.transcript());
    // Put the namespace back for the next steps when this one has failed already.
    if (!exact && existsSync(state)) await sluiceDown(gateway, state);
  }
  t.comment(`${mode.name}: where start-up was when the signal came: ${JSON.stringify(Object.fromEntries(reached))}; slowest exit ${slowest} ms after the signal`);
  // At least two distinct points (a loaded machine can slow start-up past the measured steps).
  t.ok(reached.size >= 2, `the steps landed at several points of start-up (${reached.size})`);
}

async function setUpMode(t: Test, lab: string): Promise<{ gateway: Netns; before: string } | null> {
  if (!requireRoot(t)) return null;
  if (!requireCommands(t, ['ip', 'nft', 'tc'])) return null;
  const { gateway } = await threeNamespaces(await createLab(t, lab));
  await gateway.sh('sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 && sysctl -qw net.ipv4.conf.wan0.forwarding=1 net.ipv6.conf.lan0.forwarding=1 net.ipv4.conf.all.rp_filter=0');
  await settle(gateway);
  const before = await fullSnapshot(gateway);
  t.match(before, /ipv4\/conf\/wan0\/forwarding 1/, 'set up: wan0 forwards');
  t.match(before, /ipv6\/conf\/lan0\/forwarding 1/, 'set up: IPv6 lan0 forwards');
  return { gateway, before };
}

for (const mode of MODES) {
  t.test(`SIGTERM at every ${STEP_MS} ms of start-up: ${mode.name}`, { timeout: 400_000 }, async (t) => {
    const lab = await setUpMode(t, mode.lab);
    if (lab === null) return;
    await runMode(t, lab.gateway, tempDir(t, 'stopup'), mode, lab.before);
  });
}

// Under CPU load (a busy loop per core) start-up is slower: steps of 100 ms cover it.
t.test(`under CPU load, SIGTERM at every ${LOAD_STEP_MS} ms of start-up: gateway mode tproxy`, { timeout: 600_000 }, async (t) => {
  const lab = await setUpMode(t, 'stopupld');
  if (lab === null) return;
  // Not while another file's section needs spare CPU (test/fixtures/cpu-lock.ts).
  await holdCpuLock(t);
  startLoad(t);
  await runMode(t, lab.gateway, tempDir(t, 'stopupld'), MODES[1]!, lab.before, LOAD_STEP_MS);
});
