/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4)
 * for the metrics tests: every line is a `# HELP`, a `# TYPE` or a sample;
 * names and label names match the format's grammar, label values are
 * quoted with only the \\ \" \n escapes, values are floats (or +Inf, -Inf,
 * NaN, in any case); a metric's TYPE comes before its samples and only once; samples of
 * one metric family are contiguous; counters end in _total (or are
 * _bucket/_sum/_count of a histogram), histogram buckets are cumulative and
 * end with le="+Inf" equal to _count. Throws with the line number on any
 * violation.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(s: string, line: number): number {
  // Prometheus parses values with Go's ParseFloat: Inf and NaN in any case (prom-client writes "Nan").
  if (/^\+?inf$/i.test(s)) return Infinity;
  if (/^-inf$/i.test(s)) return -Infinity;
  if (/^nan$/i.test(s)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`line ${line}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

function parseLabels(text: string, line: number): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 0;
  if (text[i] !== '{') return { labels, rest: text };
  i++;
  for (;;) {
    if (text[i] === '}') {
      i++;
      break;
    }
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: label without =`);
    const name = text.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`);
    i = eq + 1;
    if (text[i] !== '"') throw new Error(`line ${line}: label value not quoted`);
    i++;
    let v = '';
    for (;;) {
      const c = text[i];
      if (c === undefined) throw new Error(`line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const n = text[i + 1];
        if (n === '\\') v += '\\';
        else if (n === '"') v += '"';
        else if (n === 'n') v += '\n';
        else throw new Error(`line ${line}: bad escape \\${n}`);
        i += 2;
        continue;
      }
      if (c === '\n') throw new Error(`line ${line}: raw newline in a label value`);
      v += c;
      i++;
    }
    i++;
    labels[name] = v;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new Error(`line ${line}: expected , or } after a label`);
  }
  return { labels, rest: text.slice(i) };
}

function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  for (const suffix of ['_bucket', '_sum', '_count', '']) {
    if (suffix !== '' && !name.endsWith(suffix)) continue;
    const f = families.get(suffix === '' ? name : name.slice(0, -suffix.length));
    if (f !== undefined && (suffix === '' || f.type === 'histogram' || f.type === 'summary')) return f;
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, Family>();
  const closed = new Set<string>();
  let current: Family | null = null;
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    if (raw === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (m === null) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
      let f = families.get(name);
      if (f === undefined) {
        if (closed.has(name)) throw new Error(`line ${line}: ${name} appears again after other metrics`);
        f = { name, type: 'untyped', help: '', samples: [] };
        families.set(name, f);
      }
      if (current !== null && current !== f) closed.add(current.name);
      current = f;
      if (kind === 'TYPE') {
        if (f.samples.length > 0) throw new Error(`line ${line}: TYPE of ${name} after its samples`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`line ${line}: bad type ${rest}`);
        f.type = rest as Family['type'];
      } else {
        f.help = rest;
      }
      return;
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(raw);
    if (nm === null) throw new Error(`line ${line}: not a sample: ${JSON.stringify(raw)}`);
    const name = nm[0];
    const { labels, rest } = parseLabels(raw.slice(name.length), line);
    const parts = rest.trim().split(/\s+/);
    if (!rest.startsWith(' ') || parts.length < 1 || parts.length > 2) throw new Error(`line ${line}: expected "name{labels} value [timestamp]"`);
    const value = parseValue(parts[0]!, line);
    if (parts.length === 2 && !/^-?\d+$/.test(parts[1]!)) throw new Error(`line ${line}: bad timestamp`);
    const f = familyOf(name, families);
    if (f === undefined) throw new Error(`line ${line}: sample ${name} without a TYPE`);
    if (current !== f) throw new Error(`line ${line}: samples of ${f.name} are not contiguous`);
    if (f.type === 'counter' && (value < 0 || Number.isNaN(value))) throw new Error(`line ${line}: counter ${name} is ${value}`);
    f.samples.push({ name, labels, value });
  });
  for (const f of families.values()) {
    if (f.type === 'counter' && !f.name.endsWith('_total') && !f.samples.every((s) => s.name.endsWith('_total'))) {
      // prom-client names counter families with the _total included
      throw new Error(`counter ${f.name} does not end in _total`);
    }
    if (f.type === 'histogram') checkHistogram(f);
  }
  return families;
}

function checkHistogram(f: Family): void {
  const series = new Map<string, Sample[]>();
  for (const s of f.samples) {
    if (!s.name.endsWith('_bucket')) continue;
    const { le, ...rest } = s.labels;
    if (le === undefined) throw new Error(`${f.name}: bucket without le`);
    const key = JSON.stringify(rest);
    series.set(key, [...(series.get(key) ?? []), s]);
  }
  for (const [key, buckets] of series) {
    let prev = -Infinity;
    let prevCount = 0;
    for (const b of buckets) {
      const le = parseValue(b.labels.le!, 0);
      if (le <= prev) throw new Error(`${f.name}${key}: buckets not in increasing le`);
      if (b.value < prevCount) throw new Error(`${f.name}${key}: buckets not cumulative`);
      prev = le;
      prevCount = b.value;
    }
    if (prev !== Infinity) throw new Error(`${f.name}${key}: no le="+Inf" bucket`);
    const count = f.samples.find((s) => s.name === `${f.name}_count` && JSON.stringify(s.labels) === key);
    if (count === undefined || count.value !== prevCount) throw new Error(`${f.name}${key}: _count differs from the +Inf bucket`);
  }
}

/** The value of one sample (labels must match exactly a subset given), summed over the matching ones; 0 when none. */
export function sampleSum(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
    }
  }
  return sum;
}
