/**
 * The base of every error sluice throws on purpose, in undici's style: a
 * class per kind, and a stable `code` a caller can switch on without
 * parsing the message (docs/errors.md lists them all). Messages may be
 * reworded; codes are not renamed.
 *
 * Bad packets never throw (they are counted and dropped). Misuse of an API,
 * a configuration that cannot work, and failures a caller must tell apart
 * throw a SluiceError subclass.
 */
export abstract class SluiceError extends Error {
  abstract readonly code: string;
}

export function isSluiceError(err: unknown): err is SluiceError {
  return err instanceof SluiceError;
}

/** An object used in an order its API forbids (start twice, add after build, commit without reserve). */
export class InvalidStateError extends SluiceError {
  readonly code = 'SLUICE_INVALID_STATE';
}
