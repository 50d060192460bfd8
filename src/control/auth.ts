/**
 * Who may use the control API, and from which web pages.
 *
 * Auth (as mihomo's `authentication`): `Authorization: Bearer <secret>`,
 * or on a WebSocket upgrade a non-empty `?token=<secret>` (a browser cannot
 * set headers on a WebSocket). Compared in constant time. Anything else:
 * 401 `{"message":"Unauthorized"}`.
 *
 * CORS (as the dashboards need it, reference 1.1 and 2.3): any origin, the
 * Authorization and Content-Type headers, and
 * `Access-Control-Allow-Private-Network: true` on preflight so a dashboard
 * served from an https origin may reach a loopback or LAN controller
 * (Private Network Access). No cookies are used, so `*` is safe: the secret
 * is what protects the API.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export class Auth {
  private readonly want: Buffer;

  constructor(secret: string) {
    this.want = digest(secret);
  }

  /** Constant-time: both sides are hashed to 32 bytes, so neither length nor content leaks through timing. */
  private matches(token: string): boolean {
    return timingSafeEqual(digest(token), this.want);
  }

  /** Whether a request (or an upgrade, `upgrade` true) carries the secret. */
  allows(req: IncomingMessage, query: URLSearchParams, upgrade: boolean): boolean {
    if (upgrade) {
      const token = query.get('token');
      if (token !== null && token !== '') return this.matches(token);
    }
    const h = req.headers.authorization;
    if (typeof h !== 'string') return false;
    const m = /^Bearer +(.*)$/i.exec(h);
    return m !== null && this.matches(m[1]!.trim());
  }
}

export const CORS_HEADERS: OutgoingHttpHeaders = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type',
  'Access-Control-Allow-Methods': 'GET, POST, PUT, PATCH, DELETE, OPTIONS',
};

export function applyCors(res: ServerResponse): void {
  for (const [k, v] of Object.entries(CORS_HEADERS)) res.setHeader(k, v as string);
}

/** An OPTIONS preflight: answered on every path, before auth (browsers send no credentials with it). */
export function answerPreflight(res: ServerResponse): void {
  res.writeHead(204, { ...CORS_HEADERS, 'Access-Control-Max-Age': '300', 'Access-Control-Allow-Private-Network': 'true', 'Content-Length': '0' });
  res.end();
}
