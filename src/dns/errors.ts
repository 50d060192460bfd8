/**
 * Errors of the DNS layer. Hostile bytes never throw (parsers return a
 * reason code); these are for misuse of an API, bad configuration and
 * upstream failures, each with a stable `code` in the undici style.
 */
import { SluiceError } from '../errors.js';

export type DnsErrorCode =
  | 'SLUICE_DNS_BAD_ARGUMENT'
  | 'SLUICE_DNS_BAD_NAME'
  | 'SLUICE_DNS_MESSAGE_TOO_LONG'
  | 'SLUICE_DNS_FAKEIP_CONFIG'
  | 'SLUICE_DNS_TIMEOUT'
  | 'SLUICE_DNS_ABORTED'
  | 'SLUICE_DNS_DEADLINE'
  | 'SLUICE_DNS_NETWORK'
  | 'SLUICE_DNS_CONNECTION_REFUSED'
  | 'SLUICE_DNS_BAD_RESPONSE'
  | 'SLUICE_DNS_HTTP_STATUS'
  | 'SLUICE_DNS_UPSTREAM_RCODE'
  | 'SLUICE_DNS_ALL_UPSTREAMS_FAILED';

export class DnsError extends SluiceError {
  readonly code: DnsErrorCode;
  constructor(code: DnsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DnsError';
    this.code = code;
  }
}
