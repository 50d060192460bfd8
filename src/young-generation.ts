/**
 * V8's young generation stays at its initial size (two 1 MiB semi-spaces)
 * instead of growing to 2 x 16 MiB under a burst of allocation (connection
 * setup) and staying there: ~30 MB of resident memory per thread that an
 * idle proxy never needs (issue 10). The stack allocates nothing per
 * packet, so the scavenges a smaller nursery costs are those of connection
 * setup and control traffic. SLUICE_SEMI_SPACE_GROWTH overrides the factor
 * (a number; 2 is V8's default). V8 reads the flag each time it considers
 * growing new space, and it is one flag for the whole process.
 *
 * Imported first by bin/sluice.js (before anything is allocated in
 * earnest) and by every worker thread (src/workers/worker-entry.ts): starting
 * a worker thread puts V8's flags back to their command-line values, for
 * every thread. Measured on Node 20.20: after `new Worker()` the main
 * thread's new space and the worker's each grew to 32 MB (96 MB in a
 * two-queue `sluice run` with 10,000 flows); set again by the worker, both
 * stay at 2 MB.
 */
import { setFlagsFromString } from 'node:v8';

setFlagsFromString(`--semi-space-growth-factor=${Number(process.env.SLUICE_SEMI_SPACE_GROWTH) || 1}`);
