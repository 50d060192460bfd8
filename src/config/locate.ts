/**
 * From a field path to where it is written: walks the parsed YAML document
 * (which keeps source ranges) along the path and turns the node's offset into
 * line:column. Also formats paths for people: `rules[3].ipCidr[1]`.
 */
import { isAlias, isMap, isPair, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';

export type PathSegment = string | number;

/** Where on the node a problem points: its value, or (for an unknown key) the key itself. */
export type Anchor = 'value' | 'key';

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$-]*$/;

export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (IDENT.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** Splits an ajv instancePath (a JSON Pointer, RFC 6901) and types array indexes as numbers by walking the data. */
export function pointerToPath(pointer: string, data: unknown): PathSegment[] {
  if (pointer === '') return [];
  const out: PathSegment[] = [];
  let here: unknown = data;
  for (const raw of pointer.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(here) && /^(?:0|[1-9][0-9]*)$/.test(seg)) {
      out.push(Number(seg));
      here = here[Number(seg)];
    } else {
      out.push(seg);
      here = here !== null && typeof here === 'object' ? (here as Record<string, unknown>)[seg] : undefined;
    }
  }
  return out;
}

export function isPrefix(prefix: readonly PathSegment[], path: readonly PathSegment[]): boolean {
  if (prefix.length > path.length) return false;
  for (let i = 0; i < prefix.length; i++) if (prefix[i] !== path[i]) return false;
  return true;
}

export interface Position {
  line: number;
  column: number;
}

function keyMatches(key: unknown, seg: PathSegment): boolean {
  const k = isScalar(key) ? key.value : key;
  return String(k) === String(seg);
}

/**
 * Line and column of the deepest node along `path` that exists in the
 * document. A path into a defaulted (absent) value therefore points at the
 * nearest enclosing object that is written down.
 */
export function locate(doc: Document, lines: LineCounter, path: readonly PathSegment[], anchor: Anchor = 'value'): Position {
  let node: unknown = doc.contents;
  let offset = rangeStart(node) ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && keyMatches(p.key, seg));
      if (pair === undefined) break;
      const last = i === path.length - 1;
      const keyStart = rangeStart(pair.key);
      const valueStart = rangeStart(pair.value);
      if (last && anchor === 'key' && keyStart !== null) {
        offset = keyStart;
        break;
      }
      // `key:` with nothing after it has no value node; point at the key.
      offset = valueStart ?? keyStart ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item: unknown = node.items[seg];
      const start = rangeStart(item);
      if (start === null) break;
      offset = start;
      node = item;
    } else {
      break;
    }
  }
  const pos = lines.linePos(offset);
  return { line: pos.line, column: pos.col };
}

function rangeStart(node: unknown): number | null {
  if (node === null || node === undefined || typeof node !== 'object') return null;
  const range = (node as Node).range;
  return Array.isArray(range) ? range[0] : null;
}
