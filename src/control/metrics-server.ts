/**
 * `metrics.listen`: a listener of its own that serves only `GET /metrics`,
 * for scrapers that should not hold the API secret. No auth (the metrics
 * carry counts, never addresses or names). It binds before the TUN opens,
 * as api.listen does, so an address in use fails start-up with an error
 * naming metrics.listen and nothing else started.
 */
import http from 'node:http';
import { chmodSync } from 'node:fs';
import { bindServer, formatListen, type ListenAddress } from './listen.js';
import type { SluiceMetrics } from './metrics.js';

export class MetricsServer {
  private metrics: SluiceMetrics | null = null;
  private readonly http: http.Server;

  constructor(
    private readonly listen: ListenAddress,
    /** SO_MARK of a TCP listener (route.mark under route.auto); 0: none. */
    private readonly mark = 0,
  ) {
    this.http = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('only GET /metrics here\n');
        return;
      }
      if (path !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('only /metrics here\n');
        return;
      }
      const m = this.metrics;
      if (m === null) {
        res.writeHead(503, { 'Content-Type': 'text/plain' }).end('sluice is starting\n');
        return;
      }
      m.text().then(
        (text) => res.writeHead(200, { 'Content-Type': m.contentType, 'Content-Length': Buffer.byteLength(text) }).end(req.method === 'HEAD' ? undefined : text),
        (err: Error) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
      );
    });
    this.http.maxConnections = 64;
  }

  get address(): string {
    return formatListen(this.listen);
  }

  /** Binds; the error names metrics.listen. */
  async start(): Promise<void> {
    const a = this.listen;
    await bindServer(this.http, a, 'metrics.listen', 'set metrics.listen to a free address, or null to serve /metrics on the API only', this.mark);
    if (a.kind === 'unix') chmodSync(a.path, 0o660);
    this.http.on('error', () => {});
  }

  /** Starts answering (503 until then). */
  serve(metrics: SluiceMetrics): void {
    this.metrics = metrics;
  }

  close(): Promise<void> {
    this.http.closeAllConnections();
    return new Promise((resolve) => this.http.close(() => resolve()));
  }
}
