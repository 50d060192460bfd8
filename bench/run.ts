/** `npm run bench`: every benchmark, one table each. The TUN bench needs root. */
import { printRows } from './wire.bench.js';
import { runWireBench } from './wire.bench.js';
import { runTunBench } from './tun.bench.js';
import { printStackRows, runStackBench } from './stack.bench.js';
import { printSniffRows, runSniffBench } from './sniff.bench.js';
import { printPolicyRows, runPolicyBench } from './policy.bench.js';
import { printCaptureRows, runCaptureBench } from './capture.bench.js';
import { printFastPathRows, runFastPathBench } from './fastpath.bench.js';
import { printTcpRows, runTcpBench } from './tcp.bench.js';
import { printStackCpuRows, runStackCpuBench } from './stack-cpu.bench.js';
import { printConnSetupRows, runConnSetupBench } from './conn-setup.bench.js';

printRows(`wire codecs (node ${process.version})`, runWireBench());
printSniffRows(runSniffBench());
printPolicyRows(runPolicyBench());
printCaptureRows(runCaptureBench());
printTcpRows(runTcpBench(5));
printStackCpuRows(await runStackCpuBench(32, 5), 32);
if (process.getuid?.() === 0) {
  printRows('TUN batch reader, kernel TCP sender, 1024 MiB per run', await runTunBench(1024));
  printStackRows(await runStackBench(5));
  printFastPathRows(await runFastPathBench(5, 3));
  printConnSetupRows(await runConnSetupBench(5, 3), 5, 16);
} else {
  console.log('\n(TUN and stack benchmarks skipped: needs root for network namespaces)');
}
