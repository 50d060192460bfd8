/**
 * `sluice capture [--pcap FILE] [--filter HOST|PORT] [--count N]`: what
 * crosses the running sluice's TUN, from its API (GET /v1/capture, with the
 * stored secret). With --pcap the packets go into a pcap file (LINKTYPE_RAW,
 * readable by `tcpdump -r` and Wireshark; `-` for stdout); without it, one
 * line per packet. Stops after --count packets, or on Ctrl-C; then says how
 * many packets were captured and how many the running sluice dropped
 * because this reader was too slow.
 *
 * Exit codes: 0 done, 1 the API could not be reached or refused, 2 usage.
 */
import http from 'node:http';
import { createWriteStream, type WriteStream } from 'node:fs';
import { parseArgs } from 'node:util';
import type { CommandIo } from './check.js';
import { ControlError, TARGET_OPTIONS, TARGET_USAGE, messageOf, resolveTarget, runControl, type ApiTarget } from '../control/client.js';
import { PCAP_GLOBAL_HEADER_LEN, PcapStreamParser, type PcapRecord } from '../link/pcap-writer.js';
import { parseCaptureFilter } from '../link/capture.js';
import { formatIpv4 } from '../wire/ipv4.js';
import { formatIpv6 } from '../wire/ipv6.js';

export const CAPTURE_USAGE = `Usage: sluice capture [--pcap FILE] [--filter HOST|PORT] [--count N] [--snaplen BYTES] [options]

Captures the packets crossing the running sluice's TUN (both directions).
  --pcap FILE        write a pcap file (tcpdump -r FILE reads it; - for stdout);
                     without it, one line per packet
  --filter HOST|PORT only packets to or from an address (203.0.113.7,
                     2001:db8::1) or with a TCP/UDP port at either end (443)
  --count N          stop after N packets (default: until Ctrl-C)
  --snaplen BYTES    keep at most BYTES of each packet (default: all)
${TARGET_USAGE}`;

const TCP_FLAGS = ['F', 'S', 'R', 'P', '.', 'U', 'E', 'W'];

/** One line per packet: `12:00:00.123456 TCP 192.0.2.2.40000 > 203.0.113.2.80 [S] len 0`. */
export function packetLine(r: PcapRecord, resolution: 'us' | 'ns'): string {
  const d = new Date(r.timeSec * 1000);
  const frac = String(r.timeFrac).padStart(resolution === 'ns' ? 9 : 6, '0');
  const time = `${d.toISOString().slice(11, 19)}.${frac}`;
  const p = r.data;
  const v = p.length > 0 ? p[0]! >> 4 : 0;
  let src: string;
  let dst: string;
  let proto: number;
  let l4: number;
  let ipLen: number;
  if (v === 4 && p.length >= 20) {
    src = formatIpv4(p, 12);
    dst = formatIpv4(p, 16);
    proto = p[9]!;
    l4 = (p[0]! & 0x0f) * 4;
    ipLen = r.origLen;
    if ((((p[6]! & 0x1f) << 8) | p[7]!) !== 0) return `${time} IP ${src} > ${dst} fragment, ${ipLen} bytes`;
  } else if (v === 6 && p.length >= 40) {
    src = formatIpv6(p, 8);
    dst = formatIpv6(p, 24);
    proto = p[6]!;
    l4 = 40;
    ipLen = r.origLen;
  } else {
    return `${time} ? ${r.origLen} bytes`;
  }
  const ports = (): [number, number] | null => (l4 + 4 <= p.length ? [(p[l4]! << 8) | p[l4 + 1]!, (p[l4 + 2]! << 8) | p[l4 + 3]!] : null);
  const at = (a: string, port: number): string => `${a}.${port}`;
  if (proto === 6) {
    const pp = ports();
    if (pp === null || l4 + 14 > p.length) return `${time} TCP ${src} > ${dst} (truncated) ${ipLen} bytes`;
    const flags = p[l4 + 13]!;
    let f = '';
    for (let i = 0; i < 8; i++) if ((flags & (1 << i)) !== 0 && i !== 4) f += TCP_FLAGS[i];
    if ((flags & 0x10) !== 0) f += '.';
    const payload = ipLen - (l4 + ((p[l4 + 12]! >> 4) * 4));
    return `${time} TCP ${at(src, pp[0])} > ${at(dst, pp[1])} [${f}] len ${Math.max(0, payload)}`;
  }
  if (proto === 17) {
    const pp = ports();
    if (pp === null) return `${time} UDP ${src} > ${dst} (truncated) ${ipLen} bytes`;
    return `${time} UDP ${at(src, pp[0])} > ${at(dst, pp[1])} len ${Math.max(0, ipLen - l4 - 8)}`;
  }
  if (proto === 1 || proto === 58) return `${time} ICMP${proto === 58 ? 'v6' : ''} ${src} > ${dst} type ${l4 < p.length ? p[l4] : '?'} ${ipLen} bytes`;
  return `${time} IP${v === 6 ? '6' : ''} ${src} > ${dst} proto ${proto} ${ipLen} bytes`;
}

interface CaptureFlags {
  pcap?: string;
  filter?: string;
  count?: string;
  snaplen?: string;
}

function query(f: CaptureFlags): string {
  const q = new URLSearchParams();
  if (f.filter !== undefined) {
    const parsed = parseCaptureFilter(f.filter);
    if (typeof parsed === 'string') throw new UsageError(`--filter: ${parsed}`);
    q.set('filter', f.filter);
  }
  for (const [flag, v] of [['count', f.count], ['snaplen', f.snaplen]] as const) {
    if (v === undefined) continue;
    if (!/^\d{1,9}$/.test(v) || Number(v) < 1) throw new UsageError(`--${flag}: expected a positive whole number, got ${JSON.stringify(v)}`);
    q.set(flag, v);
  }
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}

class UsageError extends Error {}

export async function runCapture(argv: string[], io: CommandIo = process, signals: NodeJS.EventEmitter = process): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; strict: true; allowPositionals: false; options: typeof OPTIONS }>>;
  try {
    parsed = parseArgs({ args: argv, strict: true, allowPositionals: false, options: OPTIONS });
  } catch (err) {
    io.stderr.write(`sluice capture: ${(err as Error).message}\n\n${CAPTURE_USAGE}\n`);
    return 2;
  }
  const values = parsed.values;
  if (values.help === true) {
    io.stdout.write(`${CAPTURE_USAGE}\n`);
    return 0;
  }
  let path: string;
  try {
    path = `/v1/capture${query(values)}`;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`sluice capture: ${err.message}\n\n${CAPTURE_USAGE}\n`);
    return 2;
  }
  return runControl('capture', CAPTURE_USAGE, io, async () => {
    const target = await resolveTarget(values);
    return stream(target, path, values.pcap, io, signals);
  });
}

const OPTIONS = {
  ...TARGET_OPTIONS,
  pcap: { type: 'string' },
  filter: { type: 'string' },
  count: { type: 'string' },
  snaplen: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function stream(target: ApiTarget, path: string, pcap: string | undefined, io: CommandIo, signals: NodeJS.EventEmitter): Promise<number> {
  const headers: Record<string, string> = { Accept: 'application/vnd.tcpdump.pcap' };
  if (target.secret !== null) headers.Authorization = `Bearer ${target.secret}`;
  const options: http.RequestOptions = { method: 'GET', path, headers };
  if (target.socketPath !== null) options.socketPath = target.socketPath;
  else {
    options.host = target.host;
    options.port = target.port;
  }
  return new Promise((resolve, reject) => {
    let file: WriteStream | null = null;
    let packets = 0;
    let stopped = false;
    const onSignal = (): void => {
      stopped = true;
      req.destroy();
    };
    let finished = false;
    const done = (code: number, dropped: string | null): void => {
      if (finished) return;
      finished = true;
      signals.off('SIGINT', onSignal);
      signals.off('SIGTERM', onSignal);
      const finish = (): void => {
        io.stderr.write(`sluice capture: ${packets} packets${dropped !== null && dropped !== '0' ? `, ${dropped} dropped by sluice (this reader was too slow)` : ''}${pcap !== undefined && pcap !== '-' ? ` written to ${pcap}` : ''}\n`);
        resolve(code);
      };
      if (file !== null) file.end(finish);
      else finish();
    };
    const req = http.request(options, (res) => {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON
          }
          reject(new ControlError(res.statusCode === 401 ? `the API at ${target.display} refused the secret from ${target.secretFrom}` : `GET /v1/capture: ${res.statusCode} ${messageOf(body) ?? text.slice(0, 200)}`, res.statusCode ?? null));
        });
        return;
      }
      if (pcap !== undefined) {
        const out: NodeJS.WritableStream = pcap === '-' ? process.stdout : (file = createWriteStream(pcap, { mode: 0o644 }));
        if (file !== null) file.on('error', (err) => reject(new ControlError(`--pcap ${pcap}: ${err.message}`)));
        let header = PCAP_GLOBAL_HEADER_LEN;
        const counter = new PcapStreamParser();
        res.on('data', (c: Buffer) => {
          if (!out.write(c)) res.pause();
          const body = header > 0 ? c.subarray(Math.min(header, c.length)) : c;
          header = Math.max(0, header - c.length);
          counter.push(body, () => packets++);
        });
        out.on('drain', () => res.resume());
      } else {
        let header = Buffer.alloc(0);
        let resolution: 'us' | 'ns' = 'us';
        const parser = new PcapStreamParser();
        res.on('data', (c: Buffer) => {
          let body = c;
          if (header.length < PCAP_GLOBAL_HEADER_LEN) {
            header = Buffer.concat([header, c]);
            if (header.length < PCAP_GLOBAL_HEADER_LEN) return;
            resolution = header.readUInt32LE(0) === 0xa1b23c4d ? 'ns' : 'us';
            body = header.subarray(PCAP_GLOBAL_HEADER_LEN);
          }
          parser.push(body, (r) => {
            packets++;
            io.stdout.write(`${packetLine(r, resolution)}\n`);
          });
        });
      }
      res.on('end', () => done(0, (res.trailers['x-sluice-dropped'] as string | undefined) ?? null));
      res.on('error', () => done(stopped ? 0 : 1, null));
      res.on('aborted', () => done(stopped ? 0 : 1, null));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (stopped) return done(0, null);
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') reject(new ControlError(`sluice is not running, or its API is not at ${target.display} (${err.code}); pass --api HOST:PORT|PATH or --config FILE`));
      else reject(new ControlError(`cannot reach the API at ${target.display}: ${err.message}`));
    });
    signals.once('SIGINT', onSignal);
    signals.once('SIGTERM', onSignal);
    req.end();
  });
}
