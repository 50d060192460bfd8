/**
 * Runs the JSON Schema over the parsed YAML and turns ajv's error list into
 * one sentence per mistake: alternatives of an anyOf are folded into the
 * schema's `x-expected` phrase, the most telling error per field is kept, and
 * unknown keys and enum values get a "did you mean" hint.
 */
import type { ErrorObject } from 'ajv/dist/2020.js';
import { loadValidator } from './config-validator.js';
import { OUTBOUND_TYPES } from './schema.js';
import { formatPath, pointerToPath, type Anchor, type PathSegment } from './locate.js';
import { didYouMean } from './suggest.js';

export interface Issue {
  path: PathSegment[];
  anchor: Anchor;
  message: string;
}

/** Validates `data` against the schema; returns [] when it conforms. */
export function schemaIssues(data: unknown): Issue[] {
  // Compiled from the schema at build time (build-validator.ts), not here.
  const { validate } = loadValidator();
  if (validate(data)) return [];
  return collapse(validate.errors ?? [], data);
}

type Schema = Record<string, unknown>;

/** Lower is more telling: a wrong type explains everything else wrong with a value. */
function priority(e: ErrorObject): number {
  switch (e.keyword) {
    case 'type':
      return 0;
    case 'discriminator':
    case 'enum':
    case 'anyOf':
    case 'oneOf':
    case 'const':
      return 1;
    case 'pattern':
      return 2;
    default:
      return 3;
  }
}

function collapse(errors: readonly ErrorObject[], data: unknown): Issue[] {
  // Errors raised inside an alternative of an anyOf/oneOf say why each
  // alternative failed; the combinator's own error (with x-expected) says it once.
  const combinators = errors.filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf');
  const kept = errors.filter(
    (e) =>
      e.keyword !== 'propertyNames' &&
      !combinators.some(
        (c) => c !== e && e.schemaPath.startsWith(`${c.schemaPath}/`) && e.instancePath.startsWith(c.instancePath),
      ),
  );
  const ranked = kept
    .map((e, i) => ({ e, i }))
    .sort((a, b) => priority(a.e) - priority(b.e) || a.i - b.i)
    .map((x) => x.e);
  const seen = new Set<string>();
  const out: { issue: Issue; order: number }[] = [];
  for (const e of ranked) {
    const issue = translate(e, data);
    const key = formatPath(issue.path);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ issue, order: errors.indexOf(e) });
  }
  return out.sort((a, b) => a.order - b.order).map((x) => x.issue);
}

const TYPE_WORDS: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
  null: 'null',
};

function typeWords(t: unknown): string {
  const types = Array.isArray(t) ? t : String(t).split(',');
  return types.map((x) => TYPE_WORDS[String(x)] ?? String(x)).join(' or ');
}

/** How a value reads in a message: strings quoted, containers named. */
export function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  return String(v);
}

function translate(e: ErrorObject, data: unknown): Issue {
  const path = pointerToPath(e.instancePath, data);
  const parent = (e.parentSchema ?? {}) as Schema;
  const expected = typeof parent['x-expected'] === 'string' ? (parent['x-expected'] as string) : null;
  const params = e.params as Record<string, unknown>;
  const got = describe(e.data);

  // Inside propertyNames: the error is about a key of the object, not a value.
  if (typeof e.propertyName === 'string') {
    return {
      path: [...path, e.propertyName],
      anchor: 'key',
      message: `name ${JSON.stringify(e.propertyName)} is not allowed: expected ${expected ?? 'a valid name'}`,
    };
  }

  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(params.additionalProperty);
      const allowed = Object.keys((parent.properties ?? {}) as Schema);
      const inSubRule = path.some((s) => s === 'and' || s === 'or' || s === 'not');
      const message =
        key === 'outbound' && inSubRule
          ? 'unknown key "outbound": conditions inside and/or/not take no outbound; only the top-level rule has one'
          : `unknown key "${key}"${didYouMean(key, allowed) || (allowed.length > 0 ? `; expected one of ${allowed.join(', ')}` : '')}`;
      return { path: [...path, key], anchor: 'key', message };
    }
    case 'required': {
      // Inside an outbound variant, say which type needs the key.
      const variant = ((parent.properties ?? {}) as Schema).type as Schema | undefined;
      const forType = typeof variant?.const === 'string' ? ` for type ${variant.const}` : '';
      return { path: [...path, String(params.missingProperty)], anchor: 'value', message: `missing (required${forType})` };
    }
    case 'discriminator': {
      const tagValue = params.tagValue;
      if (params.error === 'tag' && tagValue === undefined) {
        return { path: [...path, 'type'], anchor: 'value', message: 'missing (required)' };
      }
      const shown = describe(tagValue);
      const hint = typeof tagValue === 'string' ? didYouMean(tagValue, OUTBOUND_TYPES) : '';
      return {
        path: [...path, 'type'],
        anchor: 'value',
        message: `expected one of ${OUTBOUND_TYPES.join(', ')}, got ${shown}${hint}`,
      };
    }
    case 'type':
      return { path, anchor: 'value', message: `expected ${expected ?? typeWords(params.type)}, got ${got}` };
    case 'enum': {
      const allowed = (params.allowedValues as unknown[]).map(String);
      const hint = typeof e.data === 'string' ? didYouMean(e.data, allowed) : '';
      return { path, anchor: 'value', message: `expected one of ${allowed.join(', ')}, got ${got}${hint}` };
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return {
        path,
        anchor: 'value',
        message: `expected ${expected ?? `a number ${String(params.comparison)} ${String(params.limit)}`}, got ${got}`,
      };
    case 'minLength':
      return { path, anchor: 'value', message: params.limit === 1 ? 'must not be empty' : `expected at least ${String(params.limit)} characters` };
    case 'maxLength':
      return { path, anchor: 'value', message: `too long: at most ${String(params.limit)} characters` };
    case 'minItems':
      return { path, anchor: 'value', message: params.limit === 1 ? 'expected a non-empty list' : `expected at least ${String(params.limit)} items` };
    case 'maxItems':
      return { path, anchor: 'value', message: `too many items: at most ${String(params.limit)}` };
    case 'minProperties':
      return { path, anchor: 'value', message: 'expected at least one condition' };
    case 'const':
      return { path, anchor: 'value', message: `expected ${describe(params.allowedValue)}, got ${got}` };
    default:
      // pattern, anyOf, oneOf and anything else: the schema's own phrase.
      return { path, anchor: 'value', message: expected !== null ? `expected ${expected}, got ${got}` : `${e.message ?? 'invalid'}` };
  }
}
