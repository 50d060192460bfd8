#!/usr/bin/env node
// Thin launcher: the CLI lives in TypeScript (src/cli.ts), compiled to dist/.
//
// Before the CLI's modules load: SIGINT/SIGTERM are recorded instead of
// ending the process and SIGHUP is ignored, so `sluice run` stops cleanly
// (exit 0, nothing left installed) from any point of start-up. `sluice run`
// takes the recorded signal over when it installs its own handlers.
let earlySignal = null;
const record = (signal) => {
  earlySignal ??= signal;
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
