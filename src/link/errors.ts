/** Failures of the TUN device, with stable codes (docs/errors.md). */
import { SluiceError } from '../errors.js';

export type LinkErrorCode =
  /** A read on a TUN queue failed; `errno` names the error. */
  'SLUICE_TUN_READ';

export class LinkError extends SluiceError {
  readonly code: LinkErrorCode;
  /** errno name (EAGAIN, EBADFD, ...) when a system call failed. */
  readonly errno: string | undefined;
  constructor(code: LinkErrorCode, message: string, errno?: string) {
    super(message);
    this.name = 'LinkError';
    this.code = code;
    this.errno = errno;
  }
}

/** What a failed TUN read most likely means, by errno name. */
export function tunReadHint(errno: string): string {
  switch (errno) {
    case 'EBADF': // libuv reports a poll error (POLLERR) as EBADF
    case 'EBADFD':
      return 'the interface was deleted or this queue detached';
    case 'EIO':
      return 'the interface is not up';
    case 'EFAULT':
      return 'the receive buffer is not writable';
    case 'EINVAL':
      return 'the receive buffer is smaller than a packet';
    default:
      return 'see read(2) on a TUN descriptor';
  }
}
