/**
 * A worker thread's entry (pool.ts WORKER_SCRIPT): the young-generation
 * flag first, then the worker's modules. Starting the thread put V8's flags
 * back to their command-line values (src/young-generation.ts), and loading
 * worker-main.ts's modules allocates enough to grow the thread's new space
 * while they are: set from worker-main.ts's first import, a worker's new
 * space was already 8 MB (4 MiB semi-spaces) when it started serving; set
 * here, before the others load, it stays at 2 MB, as bin/sluice.js does
 * for the main thread.
 */
import '../young-generation.js';

await import('./worker-main.js');
