/**
 * The select groups' choices, kept across restarts in a small JSON file
 * (by default beside the state file: `groups.json`). A stored choice wins
 * over the config's `default` unless that `default` was edited since the
 * choice was made (then the config is the newer word).
 *
 * Written whole to a temporary file and renamed, so a crash leaves the old
 * or the new file, never half of one. Bounded: at most MAX_GROUPS entries.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export const MAX_GROUPS = 4096;

export interface StoredChoice {
  /** The member chosen. */
  selected: string;
  /** The group's config `default` when the choice was stored (null: none). */
  configDefault: string | null;
}

export class SelectionStore {
  private readonly choices = new Map<string, StoredChoice>();
  /** The last write's error, for the caller to log; null when fine. */
  lastError: string | null = null;

  /** `path` null keeps choices in memory only. */
  constructor(readonly path: string | null) {
    if (path === null) return;
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return; // no file yet
    }
    try {
      const data = JSON.parse(text) as { version?: unknown; selected?: unknown };
      if (data.version !== 1 || data.selected === null || typeof data.selected !== 'object') return;
      for (const [group, v] of Object.entries(data.selected as Record<string, unknown>)) {
        if (this.choices.size >= MAX_GROUPS) break;
        const c = v as { selected?: unknown; configDefault?: unknown };
        if (typeof c?.selected !== 'string') continue;
        this.choices.set(group, { selected: c.selected, configDefault: typeof c.configDefault === 'string' ? c.configDefault : null });
      }
    } catch (err) {
      this.lastError = `${path}: ignored, not valid JSON (${(err as Error).message})`;
    }
  }

  /** The member a select group starts on: the stored one if still a member and the config's default unchanged, else the default, else the first. */
  initial(group: string, members: readonly string[], configDefault: string | null): string {
    const c = this.choices.get(group);
    if (c !== undefined && members.includes(c.selected) && (configDefault === null || c.configDefault === configDefault)) return c.selected;
    return configDefault ?? members[0]!;
  }

  get(group: string): StoredChoice | undefined {
    return this.choices.get(group);
  }

  /** Records a choice and writes the file; returns false (and sets lastError) when the write failed. */
  set(group: string, selected: string, configDefault: string | null): boolean {
    if (!this.choices.has(group) && this.choices.size >= MAX_GROUPS) return false;
    this.choices.set(group, { selected, configDefault });
    if (this.path === null) return true;
    try {
      mkdirSync(dirname(this.path), { recursive: true });
      const tmp = `${this.path}.tmp`;
      writeFileSync(tmp, JSON.stringify({ version: 1, selected: Object.fromEntries(this.choices) }, null, 2) + '\n', { mode: 0o644 });
      renameSync(tmp, this.path);
      this.lastError = null;
      return true;
    } catch (err) {
      this.lastError = `cannot save group choices to ${this.path}: ${(err as Error).message}`;
      return false;
    }
  }
}
