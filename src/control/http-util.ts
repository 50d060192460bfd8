/**
 * Request and response helpers of the control API: JSON answers in the
 * Clash error shape (`{"message": ...}`), bounded body reading, and the
 * typed error route handlers throw to answer 4xx/5xx.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** Largest request body read (mihomo's /storage takes 1 MiB; nothing else needs more). */
export const MAX_BODY_BYTES = 1 << 20;

/** Thrown by a handler to answer `status` with `{"message": message}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string): ApiError => new ApiError(400, message);
export const notFound = (message = 'Resource not found'): ApiError => new ApiError(404, message);

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendNoContent(res: ServerResponse): void {
  res.writeHead(204);
  res.end();
}

export function sendError(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { message });
}

/** The body as text, at most MAX_BODY_BYTES (413 beyond). */
export function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > MAX_BODY_BYTES) {
      reject(new ApiError(413, `Body larger than ${MAX_BODY_BYTES} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(new ApiError(413, `Body larger than ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * The body parsed as JSON whatever the Content-Type says (metacubexd sends
 * PUT /proxies/:name without one); undefined when empty; 400 when it does not parse.
 */
export async function readJson(req: IncomingMessage): Promise<unknown> {
  const text = await readBody(req);
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw badRequest(`Body invalid: ${(err as Error).message}`);
  }
}

/** The body as a JSON object; 400 for anything else (an array, a string, nothing). */
export async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown>> {
  const v = await readJson(req);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badRequest('Body invalid: expected a JSON object');
  return v as Record<string, unknown>;
}

/** A whole-number query parameter within [min, max]; `fallback` when absent; 400 otherwise. */
export function intParam(query: URLSearchParams, name: string, min: number, max: number, fallback: number | null): number {
  const raw = query.get(name);
  if (raw === null || raw === '') {
    if (fallback === null) throw badRequest(`query parameter ${name} is required (a whole number from ${min} to ${max})`);
    return fallback;
  }
  if (!/^\d{1,10}$/.test(raw)) throw badRequest(`query parameter ${name}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(raw.slice(0, 40))}`);
  const n = Number(raw);
  if (n < min || n > max) throw badRequest(`query parameter ${name}: expected a whole number from ${min} to ${max}, got ${n}`);
  return n;
}
