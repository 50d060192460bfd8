/**
 * `sluice run [--config FILE]`: open the TUN, start the stack and the
 * engine, serve until SIGINT/SIGTERM. Without --config the built-in
 * default policy runs (everything direct, DNS hijacked in fake-ip mode and
 * cached, every flow logged). SIGHUP re-reads rule-set files.
 *
 * The TUN gets the configured addresses (they vanish with the device when
 * sluice exits). With route.auto, src/system/ installs the routes and
 * rules that steer this machine's traffic into it (recorded in the state
 * file, removed on SIGINT/SIGTERM, leftovers of a killed run removed on
 * start); otherwise route a prefix into the TUN yourself (README).
 *
 * Exit codes: 0 clean stop, 1 configuration or start-up failure, 2 usage.
 */
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { isConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import { defaultConfig, type SluiceConfig } from '../config/types.js';
import { TunDevice } from '../link/tun.js';
import { Engine } from '../engine/engine.js';
import { createLogger } from '../engine/logger.js';
import type { CommandIo } from './check.js';
import { DEFAULT_STATE_PATH } from '../system/state.js';
import { checkAutoRoute, startAutoRoute, cleanLeftovers, checkGateway, startGateway } from '../system/lifecycle.js';
import { startTproxyListeners } from '../system/tproxy-listen.js';
import { startTproxyUdp, type TproxyUdp } from '../system/tproxy-udp.js';
import type net from 'node:net';
import { checkClassifier, startClassifier, type RunningClassifier } from '../system/classifier-run.js';
import { dropPrivileges, planPrivilegeDrop } from '../system/privileges.js';
import { sdNotify } from '../system/sd-notify.js';
import { refuseGlobalDispatch } from '../outbound/agent.js';
import { reportCoexistence } from '../system/coexistence.js';

export const RUN_USAGE = `Usage: sluice run [--config FILE] [--state FILE]

Starts the TUN proxy. Without --config, the built-in default policy runs:
everything direct, DNS hijacked (fake-ip) and cached, every flow logged.
Needs root or CAP_NET_ADMIN. SIGHUP reloads rule-set files; SIGINT or
SIGTERM stops. With route.auto, gateway or classifier, what sluice installs
(routes, ip rules, nftables tables, tc filters, sysctls) is recorded in the
state file (default ${DEFAULT_STATE_PATH}) and removed on stop; leftovers of
a killed run are removed first. With run.user, sluice switches to that
user once set-up is done, keeping only the capabilities new flows and
teardown need (docs/configuration.md, "run"). Under systemd
(docs/sluice.service) it sends READY=1 when ready, STOPPING=1 on stop.`;

function addAddress(dev: string, cidr: string): void {
  try {
    execFileSync('ip', ['addr', 'replace', cidr, 'dev', dev], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? (err as Error).message;
    throw new Error(`tun: cannot add address ${cidr} to ${dev}: ${stderr}`);
  }
}

export async function runRun(argv: string[], io: CommandIo = process): Promise<number> {
  let values: { config?: string | undefined; state?: string | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { config: { type: 'string', short: 'c' }, state: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    io.stderr.write(`sluice run: ${(err as Error).message}\n\n${RUN_USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    io.stdout.write(`${RUN_USAGE}\n`);
    return 0;
  }
  let config: SluiceConfig;
  try {
    config = values.config !== undefined ? await loadConfig(values.config) : defaultConfig();
  } catch (err) {
    if (!isConfigError(err)) throw err;
    io.stderr.write(`${err.message}\nsluice run: ${values.config}: ${err.problems.length} problem${err.problems.length === 1 ? '' : 's'}; nothing was started\n`);
    return 1;
  }
  const log = createLogger(config.log);
  // Every socket goes through the marked dialer; undici's global agent would not (issue 12, item 6).
  refuseGlobalDispatch();
  const statePath = values.state ?? DEFAULT_STATE_PATH;
  if (config.route.auto) {
    // sluice's own sockets carry route.mark so the main table, not the TUN, routes them.
    for (const o of config.outbounds) if (o.type === 'direct' && o.mark === null) o.mark = config.route.mark;
  }
  let tun: TunDevice;
  let engine: Engine;
  let stopRoute: (() => Promise<void>) | null = null;
  let started: Engine | null = null;
  let classifier: RunningClassifier | null = null;
  let stopGateway: (() => Promise<void>) | null = null;
  let listeners: net.Server[] = [];
  let udpTproxy: TproxyUdp | null = null;
  try {
    const drop = planPrivilegeDrop(config, values.config ?? 'built-in default', statePath);
    await cleanLeftovers(statePath, log);
    // Docker, libvirt, WireGuard, Tailscale, nearby rules: one line each; with route.auto their prefixes stay off the TUN.
    if (config.route.auto || config.gateway.enabled || config.classifier.enabled) config.route = await reportCoexistence(config.route, log);
    if (config.route.auto) await checkAutoRoute(config.route, values.config ?? 'built-in default');
    if (config.classifier.enabled) await checkClassifier(config, values.config ?? 'built-in default');
    if (config.gateway.enabled) await checkGateway(config, values.config ?? 'built-in default');
    tun = TunDevice.open({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload });
    addAddress(tun.name, config.tun.ipv4);
    addAddress(tun.name, config.tun.ipv6);
    engine = new Engine(config, tun, log);
    await engine.start();
    started = engine;
    if (config.route.auto) stopRoute = await startAutoRoute(config.route, tun.name, statePath, log);
    if (config.classifier.enabled) classifier = await startClassifier(config, tun.name, statePath, log);
    if (config.gateway.enabled && config.gateway.mode === 'tproxy') {
      const e = engine;
      listeners = await startTproxyListeners(config.gateway.tproxyPort, (s) => e.handleTransparent(s), log);
      udpTproxy = await startTproxyUdp(config.gateway.tproxyPort, (s) => e.handleTransparentUdp(s), log, e.tproxyUdpOptions());
    }
    if (config.gateway.enabled) stopGateway = await startGateway(config, tun.name, statePath, log);
    if (drop !== null) dropPrivileges(drop, values.config ?? 'built-in default', log);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'start-up failed');
    io.stderr.write(`sluice run: ${(err as Error).message}\n`);
    for (const l of listeners) l.close();
    udpTproxy?.close();
    await started?.stop().catch(() => {});
    return 1;
  }
  log.info({ tun: tun.name, mtu: tun.mtu, offloads: tun.offloads !== 0, dns: config.dns.hijack ? config.dns.mode : 'off', config: values.config ?? 'built-in default' }, 'ready');
  sdNotify(`READY=1\nSTATUS=serving on ${tun.name}`, log);
  return new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      sdNotify('STOPPING=1', log);
      log.info({ signal, ...engine.counters, stack: engine.stack.stats.drops, classifier: classifier?.counters() ?? undefined }, 'stopping');
      // Classifier, routes and rules first, so traffic stops entering the TUN before the engine goes.
      // Gateway steering first (then its TPROXY listeners), so LAN traffic stops reaching sluice.
      let gatewayFailed = false;
      const ungate = (stopGateway ?? (() => Promise.resolve()))().catch((err: Error) => {
        io.stderr.write(`sluice run: ${err.message}\n`);
        gatewayFailed = true;
      });
      const unclassify = ungate.then(() => {
        for (const l of listeners) l.close();
        udpTproxy?.close();
        return classifier?.stop();
      });
      const unroute = unclassify.then(() => (stopRoute ?? (() => Promise.resolve()))()).then(
        () => 0,
        (err: Error) => {
          io.stderr.write(`sluice run: ${err.message}\n`);
          return 1;
        },
      );
      void unroute.then((code) => engine.stop().then(() => resolve(gatewayFailed ? 1 : code)));
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    // The classifier's maps follow the reloaded policy live (no detach).
    process.on('SIGHUP', () => void engine.reload().then(() => classifier?.update(engine.activeConfig)));
    process.on('SIGUSR2', () => log.info({ ...engine.counters, stack: engine.stack.stats.drops, classifier: classifier?.counters() ?? undefined }, 'counters'));
  });
}
