/**
 * A worker thread's entry (pool.ts WORKER_SCRIPT): the GC flags first
 * (src/young-generation.ts: the small young generation, and with workers
 * no parallel scavenging or concurrent ArrayBuffer sweeping), then the
 * worker's modules. Starting the thread put V8's flags back to their
 * command-line values, and loading worker-main.ts's modules allocates
 * enough to grow the thread's new space while they are: set from
 * worker-main.ts's first import, a worker's new space was already 8 MB
 * (4 MiB semi-spaces) when it started serving; set here, before the others
 * load, it stays at 2 MB, as bin/sluice.js does for the main thread.
 * Once the worker serves, it watches its own heap (src/heap-reducer.ts).
 */
import { applyWorkerGcFlags } from '../young-generation.js';
import { startHeapReducer } from '../heap-reducer.js';
import { loadNative } from '../link/native.js';

applyWorkerGcFlags();

await import('./worker-main.js');
startHeapReducer(loadNative());
