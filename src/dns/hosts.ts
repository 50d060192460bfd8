/**
 * A hosts(5) file as a DoH bootstrap: "ADDRESS NAME [ALIASES...]" lines,
 * "#" comments; names compared case-insensitively. The file is stat'ed on
 * each lookup and re-read only when its mtime or size changed, so an edit
 * takes effect without a restart. Lookups are rare (a DoH connection's
 * set-up), so this costs nothing per query.
 */
import { readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';

/** Larger files are ignored (a bound against pointing at the wrong file). */
const MAX_HOSTS_BYTES = 4 * 1024 * 1024;

export class HostsFile {
  private table = new Map<string, { v4: string | null; v6: string | null }>();
  private stamp = '';

  constructor(readonly path: string) {}

  /**
   * The first address for `name` in the file (of `family` when given, else
   * IPv4 before IPv6), or null when absent or the file is unreadable.
   */
  async lookup(name: string, family?: 4 | 6): Promise<{ address: string; family: 4 | 6 } | null> {
    await this.refresh();
    const e = this.table.get(name.toLowerCase().replace(/\.$/, ''));
    if (e === undefined) return null;
    if (family !== 6 && e.v4 !== null) return { address: e.v4, family: 4 };
    if (family !== 4 && e.v6 !== null) return { address: e.v6, family: 6 };
    return null;
  }

  private async refresh(): Promise<void> {
    let st;
    try {
      st = await stat(this.path);
    } catch {
      this.table = new Map();
      this.stamp = '';
      return;
    }
    const stamp = `${st.mtimeMs}:${st.size}`;
    if (stamp === this.stamp) return;
    this.stamp = stamp;
    this.table = st.size > MAX_HOSTS_BYTES ? new Map() : parseHosts(await readFile(this.path, 'utf8').catch(() => ''));
  }
}

export function parseHosts(text: string): Map<string, { v4: string | null; v6: string | null }> {
  const out = new Map<string, { v4: string | null; v6: string | null }>();
  for (const raw of text.split('\n')) {
    const hash = raw.indexOf('#');
    const fields = (hash >= 0 ? raw.slice(0, hash) : raw).trim().split(/\s+/);
    if (fields.length < 2) continue;
    const address = fields[0]!;
    const fam = isIP(address);
    if (fam === 0) continue;
    for (const n of fields.slice(1)) {
      const key = n.toLowerCase().replace(/\.$/, '');
      const e = out.get(key) ?? { v4: null, v6: null };
      if (fam === 4) e.v4 ??= address;
      else e.v6 ??= address;
      out.set(key, e);
    }
  }
  return out;
}
