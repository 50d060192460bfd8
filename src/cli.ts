/**
 * Command-line entry point: `sluice <command> [options]`.
 * Each command lives in its own module; this file only dispatches.
 */
import { parseArgs } from 'node:util';
import { VERSION } from './version.js';

const USAGE = `sluice ${VERSION} — steer a machine's traffic through a TypeScript TCP/IP stack and an L7 policy engine

Usage:
  sluice run [--config FILE]     start the TUN proxy (built-in default policy without --config)
  sluice check --config FILE     validate a configuration without touching the system
  sluice down [--state FILE]     remove what a crashed run left behind
  sluice status                  version, uptime, config, flows and traffic of the running sluice
  sluice flows [--json]          the open flows, live (top-like) on a terminal
  sluice close ID...|--all       end flows at once, both sides
  sluice reload                  re-read the configuration; prints what changed or why it was refused
  sluice explain --config FILE --dst ADDR:PORT [--domain NAME] [--src ADDR:PORT]
                 [--network tcp|udp] [--protocol P] [--json]
                                 which rule decides a flow and why the earlier ones did not
  sluice explain ID              the same for a live flow of the running sluice
  sluice capture [--pcap FILE] [--filter HOST|PORT] [--count N]
                                 the packets crossing the running sluice's TUN, as pcap or one line each
  sluice --version | -v          print the version
  sluice --help | -h             print this help

The control commands (status, flows, close, reload, explain ID, capture) talk to the API of a
running sluice (default 127.0.0.1:9090, secret from its root-only file);
--api HOST:PORT|PATH, --secret, --secret-file or --config FILE override.
\`sluice COMMAND --help\` describes each command.

Needs Linux with /dev/net/tun and root or CAP_NET_ADMIN.`;

/** Signals the launcher (bin/sluice.js) recorded before the CLI loaded; take() removes its handlers. */
export interface EarlySignals {
  take(): string | null;
}

export async function main(argv: string[], early?: EarlySignals): Promise<number> {
  // Only `sluice run` keeps signals from ending it during start-up.
  const release = (): void => void early?.take();
  const { tokens } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: false,
    tokens: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  // Options before the command are sluice's own; everything after the
  // command's name belongs to the command, which parses it itself.
  const commandToken = tokens.find((t) => t.kind === 'positional');
  const commandIndex = commandToken === undefined ? argv.length : commandToken.index;
  const own = tokens.flatMap((t) => (t.kind === 'option' && t.index < commandIndex ? [t.name] : []));
  const command = commandToken?.kind === 'positional' ? commandToken.value : undefined;
  if (command !== 'run' || own.includes('version') || own.includes('help')) release();
  if (own.includes('version')) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  if (own.includes('help') || command === undefined || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const rest = argv.slice(commandIndex + 1);
  if (command === 'run') {
    const { runRun } = await import('./commands/run.js');
    return runRun(rest, process, early);
  }
  if (command === 'down') {
    const { runDown } = await import('./commands/down.js');
    return runDown(rest);
  }
  if (command === 'check') {
    const { runCheck } = await import('./commands/check.js');
    return runCheck(rest);
  }
  if (command === 'status') {
    const { runStatus } = await import('./commands/status.js');
    return runStatus(rest);
  }
  if (command === 'flows') {
    const { runFlows } = await import('./commands/flows.js');
    return runFlows(rest);
  }
  if (command === 'close') {
    const { runClose } = await import('./commands/close.js');
    return runClose(rest);
  }
  if (command === 'reload') {
    const { runReload } = await import('./commands/reload.js');
    return runReload(rest);
  }
  if (command === 'capture') {
    const { runCapture } = await import('./commands/capture.js');
    return runCapture(rest);
  }
  if (command === 'explain') {
    const { runExplain } = await import('./commands/explain.js');
    return runExplain(rest);
  }
  process.stderr.write(`sluice: unknown command "${command}"\n\n${USAGE}\n`);
  return 2;
}
