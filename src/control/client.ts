/**
 * The client side of the control API, for the CLI commands (`sluice
 * status`, `flows`, `close`, `reload`): where the API listens and with
 * which secret, and one request helper whose failures read as sentences
 * ("sluice is not running ...", "the API refused the secret ...").
 *
 * Where: --api HOST:PORT or a unix socket PATH; else `api.listen` of
 * --config FILE; else the default 127.0.0.1:9090. The secret: --secret;
 * --secret-file; `api.secret` of --config; the secret file the config
 * names (`api.secretFile`); else the default secret file sluice writes
 * when it generates one.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_STATE_PATH } from '../system/state.js';
import { secretPath } from './secret.js';
import type { CommandIo } from '../commands/check.js';

/** sluice's defaults for `api.listen` and the generated secret's file. */
export const DEFAULT_API_LISTEN = '127.0.0.1:9090';
/** Where `sluice run` (default state file, api.secretFile unset) keeps the generated secret. */
export const DEFAULT_SECRET_FILE = secretPath(null, DEFAULT_STATE_PATH);

export interface ApiTarget {
  /** Unix socket path, or null for TCP. */
  socketPath: string | null;
  host: string;
  port: number;
  /** As the user would write it, for messages. */
  display: string;
  secret: string | null;
  /** Where the secret came from, for messages. */
  secretFrom: string;
}

/** The options every control command takes. */
export const TARGET_OPTIONS = {
  api: { type: 'string' },
  secret: { type: 'string' },
  'secret-file': { type: 'string' },
  config: { type: 'string', short: 'c' },
} as const;

export const TARGET_USAGE = `  --api HOST:PORT|PATH   where the API listens (default: api.listen of --config, else ${DEFAULT_API_LISTEN})
  --secret TOKEN         the API secret (default: api.secret of --config, else the secret file)
  --secret-file FILE     read the secret from FILE (default ${DEFAULT_SECRET_FILE}, root only)
  --config FILE          take api.listen and the secret from sluice's configuration`;

/** A failure the command prints as it is and exits 1 with. */
export class ControlError extends Error {
  constructor(
    message: string,
    readonly status: number | null = null,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

/** "127.0.0.1:9090", "[::1]:9090", "/run/sluice.sock" -> a target (without the secret). */
export function parseListen(text: string, what: string): Pick<ApiTarget, 'socketPath' | 'host' | 'port' | 'display'> {
  if (text.startsWith('/') || text.startsWith('./') || text.startsWith('unix:')) {
    const p = text.startsWith('unix:') ? text.slice(5) : text;
    return { socketPath: p, host: 'localhost', port: 0, display: p };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 1 && port <= 65535)) throw new ControlError(`${what}: "${text}" is neither HOST:PORT nor an absolute unix socket path`);
  let host = m[1] ?? m[2] ?? '';
  // A wildcard listen is reached on loopback.
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return { socketPath: null, host, port, display: text };
}

interface ConfigApi {
  listen?: string | null;
  secret?: string | null;
  secretFile?: string | null;
}

/**
 * The `api` section of a config file, read on its own: a config whose rule
 * sets or other parts are broken (the case `sluice reload` reports) must
 * not keep the CLI from finding the API. The types of the three fields are
 * checked; the rest of the file is not looked at.
 */
async function configApi(file: string): Promise<ConfigApi> {
  const { readFile } = await import('node:fs/promises');
  const { parse } = await import('yaml');
  let doc: unknown;
  try {
    doc = parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new ControlError(`--config ${file}: ${(err as Error).message}`);
  }
  const api = doc !== null && typeof doc === 'object' ? (doc as { api?: unknown }).api : undefined;
  if (api === undefined || api === null) return {};
  if (typeof api !== 'object' || Array.isArray(api)) throw new ControlError(`--config ${file}: api: expected a mapping`);
  if ((api as { listen?: unknown }).listen === null) throw new ControlError(`--config ${file}: the API is off there (api.listen: null), so there is nothing to talk to`);
  const out: ConfigApi = {};
  for (const key of ['listen', 'secret', 'secretFile'] as const) {
    const v = (api as Record<string, unknown>)[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string') throw new ControlError(`--config ${file}: api.${key}: expected a string`);
    out[key] = key === 'secretFile' ? path.resolve(path.dirname(file), v) : v;
  }
  return out;
}

function readSecret(file: string, explicit: boolean): string | null {
  try {
    const s = readFileSync(file, 'utf8').trim();
    if (s === '') throw new ControlError(`the secret file ${file} is empty`);
    return s;
  } catch (err) {
    if (err instanceof ControlError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !explicit) return null;
    if (code === 'EACCES' || code === 'EPERM') throw new ControlError(`cannot read the API secret in ${file}: permission denied (it is root's; run as root, or pass --secret)`);
    throw new ControlError(`cannot read the API secret in ${file}: ${(err as Error).message}`);
  }
}

export interface TargetFlags {
  api?: string | undefined;
  secret?: string | undefined;
  'secret-file'?: string | undefined;
  config?: string | undefined;
}

export async function resolveTarget(flags: TargetFlags): Promise<ApiTarget> {
  const fromConfig = flags.config !== undefined ? await configApi(flags.config) : {};
  const listen = flags.api ?? fromConfig.listen ?? DEFAULT_API_LISTEN;
  const where = parseListen(listen, flags.api !== undefined ? '--api' : flags.config !== undefined ? `${flags.config}: api.listen` : 'default api.listen');
  let secret: string | null = null;
  let secretFrom: string;
  if (flags.secret !== undefined) {
    secret = flags.secret;
    secretFrom = '--secret';
  } else if (flags['secret-file'] !== undefined) {
    secret = readSecret(flags['secret-file'], true);
    secretFrom = flags['secret-file'];
  } else if (typeof fromConfig.secret === 'string' && fromConfig.secret !== '') {
    secret = fromConfig.secret;
    secretFrom = `${flags.config}: api.secret`;
  } else {
    const file = fromConfig.secretFile ?? DEFAULT_SECRET_FILE;
    secret = readSecret(file, false);
    secretFrom = secret === null ? `no secret (${file} does not exist)` : file;
  }
  return { ...where, secret, secretFrom };
}

export interface ApiResponse {
  status: number;
  body: unknown;
  text: string;
}

const TIMEOUT_MS = 10_000;
const MAX_BODY = 64 << 20;

/** One request; resolves with any HTTP status except 401 (thrown as ControlError), rejects with a ControlError on connection failures. */
export function request(target: ApiTarget, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (target.secret !== null) headers.Authorization = `Bearer ${target.secret}`;
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = String(payload.length);
  }
  const options: http.RequestOptions = { method, path, headers, timeout: TIMEOUT_MS };
  if (target.socketPath !== null) options.socketPath = target.socketPath;
  else {
    options.host = target.host;
    options.port = target.port;
  }
  return new Promise((resolve, reject) => {
    const req = http.request(options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) req.destroy(new ControlError(`${method} ${path}: answer larger than ${MAX_BODY} bytes`));
        else chunks.push(c);
      });
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = null;
        try {
          parsed = text === '' ? null : JSON.parse(text);
        } catch {
          parsed = text;
        }
        const status = res.statusCode ?? 0;
        if (status === 401) {
          reject(
            new ControlError(
              target.secret === null
                ? `the API at ${target.display} wants a secret and none was found (${target.secretFrom}); pass --secret or --secret-file`
                : `the API at ${target.display} refused the secret from ${target.secretFrom} (401 ${messageOf(parsed) ?? 'Unauthorized'})`,
              401,
            ),
          );
          return;
        }
        resolve({ status, body: parsed, text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new ControlError(`the API at ${target.display} did not answer ${method} ${path} within ${TIMEOUT_MS / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof ControlError) return reject(err);
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT' || err.code === 'ECONNRESET') {
        reject(new ControlError(`sluice is not running, or its API is not at ${target.display} (${err.code}); pass --api HOST:PORT|PATH or --config FILE`));
      } else if (err.code === 'EACCES') {
        reject(new ControlError(`cannot connect to the API socket ${target.display}: permission denied (run as root)`));
      } else reject(new ControlError(`cannot reach the API at ${target.display}: ${err.message}`));
    });
    req.end(payload);
  });
}

export function messageOf(body: unknown): string | null {
  if (body !== null && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') return (body as { message: string }).message;
  return null;
}

/** request() that also turns any non-2xx status into a ControlError. */
export async function call(target: ApiTarget, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await request(target, method, path, body);
  if (r.status < 200 || r.status > 299) throw new ControlError(`${method} ${path}: ${r.status} ${messageOf(r.body) ?? r.text.slice(0, 200)}`, r.status);
  return r.body;
}

/** The common tail of every control command: usage errors exit 2, control errors 1 with the message. */
export async function runControl(name: string, usage: string, io: CommandIo, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof ControlError) {
      io.stderr.write(`sluice ${name}: ${err.message}\n`);
      return 1;
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
      io.stderr.write(`sluice ${name}: ${(err as Error).message}\n\n${usage}\n`);
      return 2;
    }
    throw err;
  }
}
