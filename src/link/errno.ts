/** errno numbers to their names, for errors the native reader reports as numbers. */
import { constants } from 'node:os';

const names = new Map<number, string>();
for (const [name, n] of Object.entries(constants.errno)) if (!names.has(n)) names.set(n, name);
// Linux errnos libuv does not list, but a TUN read can return (tun_do_read: a detached queue).
if (process.platform === 'linux' && !names.has(77)) names.set(77, 'EBADFD');

/** `EAGAIN` for 11 on Linux; `errno N` when the number is unknown. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}
