#!/usr/bin/env node
// Thin launcher: the CLI lives in TypeScript (src/cli.ts), compiled to dist/.
//
// Before the CLI's modules load, SIGINT/SIGTERM end the process at once
// with exit 0 (nothing has been touched yet; loading the modules can take
// a second on a busy machine) and SIGHUP is ignored, so a signal never
// takes its default action (exit 143, 129). `sluice run` installs its own
// handlers, which stop cleanly from any later point of start-up, before
// take() removes these.
//
// First, before anything is allocated in earnest: the young generation is
// kept small (src/young-generation.ts says why; SLUICE_SEMI_SPACE_GROWTH).
import '../dist/src/young-generation.js';
let earlySignal = null;
const record = (signal) => {
  earlySignal ??= signal;
  process.exit(0);
};
const ignore = () => {};
process.on('SIGINT', record);
process.on('SIGTERM', record);
process.on('SIGHUP', ignore);
const early = {
  take() {
    process.off('SIGINT', record);
    process.off('SIGTERM', record);
    process.off('SIGHUP', ignore);
    return earlySignal;
  },
};

const { main } = await import('../dist/src/cli.js');
main(process.argv.slice(2), early).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`sluice: ${err && err.message ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
