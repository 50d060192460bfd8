/**
 * Compile-time errors of the routing policy. Matching never throws: a flow
 * that matches nothing goes to `final`. Compiling throws one `PolicyError`
 * naming the field path (`rules[3].ipCidr[1]`), the file when the value came
 * from a rule-set file, and the expected form.
 */
import { SluiceError } from '../../errors.js';

/** Stable codes (undici `UND_ERR_*` pattern): callers and tests switch on these. */
export const PolicyErrorCode = {
  /** A value has the wrong JSON type (string where a list was expected, ...). */
  InvalidType: 'SLUICE_POLICY_INVALID_TYPE',
  InvalidCidr: 'SLUICE_POLICY_INVALID_CIDR',
  InvalidDomain: 'SLUICE_POLICY_INVALID_DOMAIN',
  InvalidKeyword: 'SLUICE_POLICY_INVALID_KEYWORD',
  InvalidRegex: 'SLUICE_POLICY_INVALID_REGEX',
  InvalidPort: 'SLUICE_POLICY_INVALID_PORT',
  /** network / inbound / protocol outside their fixed vocabularies. */
  InvalidEnum: 'SLUICE_POLICY_INVALID_ENUM',
  UnknownKey: 'SLUICE_POLICY_UNKNOWN_KEY',
  EmptyRule: 'SLUICE_POLICY_EMPTY_RULE',
  EmptyList: 'SLUICE_POLICY_EMPTY_LIST',
  MissingOutbound: 'SLUICE_POLICY_MISSING_OUTBOUND',
  /** `outbound` inside an and/or/not sub-rule, where it would be ignored. */
  UnexpectedOutbound: 'SLUICE_POLICY_UNEXPECTED_OUTBOUND',
  UnknownOutbound: 'SLUICE_POLICY_UNKNOWN_OUTBOUND',
  UnknownRuleSet: 'SLUICE_POLICY_UNKNOWN_RULE_SET',
  InvalidRuleSet: 'SLUICE_POLICY_INVALID_RULE_SET',
  /** and/or/not nested deeper than MAX_RULE_DEPTH. */
  TooDeep: 'SLUICE_POLICY_TOO_DEEP',
} as const;
export type PolicyErrorCode = (typeof PolicyErrorCode)[keyof typeof PolicyErrorCode];

export class PolicyError extends SluiceError {
  readonly code: PolicyErrorCode;
  /** Field path inside the configuration, e.g. `rules[3].ipCidr[1]` or `ruleSets.ads.entries[12]`. */
  readonly path: string;
  /** The rule-set file the value came from, when there was one. */
  readonly file: string | undefined;

  constructor(code: PolicyErrorCode, path: string, message: string, file?: string) {
    const where = file === undefined ? path : `${file}: ${path}`;
    super(where === '' ? message : `${where}: ${message}`);
    this.name = 'PolicyError';
    this.code = code;
    this.path = path;
    this.file = file;
  }
}

/** Shortens a value for an error message so a 10 MB string does not end up in a log line. */
export function show(v: unknown): string {
  let s: string;
  try {
    s = typeof v === 'string' ? JSON.stringify(v) : v === undefined ? 'undefined' : JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
