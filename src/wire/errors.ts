/**
 * Why a parser refused bytes. Parsers never throw on hostile input: they
 * return one of these codes and the caller counts the drop under its name.
 * Plain numbers (not a TS enum) so a hot path compares integers and nothing
 * allocates.
 */
export const WireError = {
  Ok: 0,
  Truncated: 1,
  BadVersion: 2,
  BadHeaderLength: 3,
  BadTotalLength: 4,
  BadChecksum: 5,
  BadOption: 6,
  BadExtensionHeader: 7,
  BadDataOffset: 8,
  Unsupported: 9,
  BadGso: 10,
  BadLength: 11,
} as const;
export type WireError = (typeof WireError)[keyof typeof WireError];

/** The names of the codes, index = code; every name but 'ok' is a drop reason. */
export const WIRE_ERROR_NAMES = [
  'ok',
  'truncated',
  'bad_version',
  'bad_header_length',
  'bad_total_length',
  'bad_checksum',
  'bad_option',
  'bad_extension_header',
  'bad_data_offset',
  'unsupported',
  'bad_gso',
  'bad_length',
] as const;
export type WireErrorName = Exclude<(typeof WIRE_ERROR_NAMES)[number], 'ok'>;

/** Stable snake_case name of a failure code (never Ok), used as a drop-counter key. */
export function wireErrorName(code: WireError): WireErrorName {
  return WIRE_ERROR_NAMES[code] as WireErrorName;
}
