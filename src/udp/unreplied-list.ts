/**
 * The eviction candidates of a full UDP session table: the sessions that
 * never got a reply, oldest first, as an intrusive doubly linked list (the
 * links live on the session, so linking, unlinking and finding the oldest
 * allocate nothing and cost O(1)).
 *
 * Both tables use it, the TUN's (src/udp/sessions.ts) and TPROXY's
 * (src/udp/tproxy.ts), with the same policy: like conntrack's early drop,
 * which evicts entries that are not yet "assured", a full table makes room
 * for a new session by ending the oldest one nobody ever answered, so a
 * flood of one-way datagrams (spoofed, or to dead ports) cannot lock
 * legitimate clients out for a whole idle timeout. Only when every session
 * has been answered is a new one refused.
 */

/** What a session carries to be on the list; the list owns these fields. */
export interface UnrepliedLinks<T> {
  olderUnreplied: T | null;
  newerUnreplied: T | null;
}

export class UnrepliedList<T extends UnrepliedLinks<T>> {
  private oldestEntry: T | null = null;
  private newestEntry: T | null = null;

  /** The eviction candidate, or null when every session has been answered. */
  get oldest(): T | null {
    return this.oldestEntry;
  }

  /** Appends a new (unreplied) session as the newest. */
  push(s: T): void {
    s.olderUnreplied = this.newestEntry;
    s.newerUnreplied = null;
    if (this.newestEntry !== null) this.newestEntry.newerUnreplied = s;
    else this.oldestEntry = s;
    this.newestEntry = s;
  }

  /** Takes a session off the list (on its first reply, or when it ends). Harmless for one not on it. */
  remove(s: T): void {
    const older = s.olderUnreplied;
    const newer = s.newerUnreplied;
    if (older !== null) older.newerUnreplied = newer;
    else if (this.oldestEntry === s) this.oldestEntry = newer;
    if (newer !== null) newer.olderUnreplied = older;
    else if (this.newestEntry === s) this.newestEntry = older;
    s.olderUnreplied = s.newerUnreplied = null;
  }
}
