/**
 * systemd readiness (sd_notify(3)) for `Type=notify` units
 * (docs/sluice.service): "READY=1" once the TUN is up and set-up is done,
 * "STOPPING=1" when a stop begins. The datagram goes to the AF_UNIX socket
 * named by $NOTIFY_SOCKET (an absolute path, or "@name" for an abstract
 * one); Node's dgram has no AF_UNIX datagram sockets, so the native addon
 * sends it. Without NOTIFY_SOCKET (not started by systemd) every call is a
 * no-op.
 *
 * The variable is read once and removed from the environment, as
 * sd_notify(unset_environment=1) does, so that the `ip`, `nft` and `tc`
 * children do not inherit it.
 */
import type { Logger } from '../engine/logger.js';
import { loadNative } from '../link/native.js';

let socketPath: string | null | undefined;

/** NOTIFY_SOCKET as this process received it (read once, then removed from the environment); null when unset or unusable. */
export function notifySocket(log?: Logger): string | null {
  if (socketPath !== undefined) return socketPath;
  const raw = process.env.NOTIFY_SOCKET;
  delete process.env.NOTIFY_SOCKET;
  if (raw === undefined || raw === '') socketPath = null;
  else if ((raw.startsWith('/') || raw.startsWith('@')) && Buffer.byteLength(raw) < 108) socketPath = raw;
  else {
    // vsock: addresses (systemd 254+, for VMs) and over-long paths are not supported.
    log?.warn({ notifySocket: raw }, 'NOTIFY_SOCKET is neither an absolute path nor an @abstract name; readiness is not signalled');
    socketPath = null;
  }
  return socketPath;
}

/** Sends `message` ("READY=1\nSTATUS=...") when running under systemd; false when not sent. Never throws. */
export function sdNotify(message: string, log?: Logger): boolean {
  const path = notifySocket(log);
  if (path === null) return false;
  try {
    loadNative().sdNotify(path, message);
    return true;
  } catch (err) {
    log?.warn({ notifySocket: path, err: (err as Error).message }, 'sd_notify failed');
    return false;
  }
}
