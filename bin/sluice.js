#!/usr/bin/env node
// Thin launcher: the CLI lives in TypeScript (src/cli.ts), compiled to dist/.
import { main } from '../dist/src/cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`sluice: ${err && err.message ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
