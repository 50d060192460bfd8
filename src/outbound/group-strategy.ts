/**
 * How each group type orders its members for a flow: pure functions over
 * the members' health, no I/O and no clock (the caller passes what it
 * knows). The group dials the first member of the order and, on a dial
 * failure, the next: so every order puts live members before dead ones,
 * and a flow never waits on a dead member while a live one exists. Dead
 * members stay at the end, so when every member is down a flow still tries
 * them (one may be back before its next health check).
 */

/** What a group knows about one member. */
export interface MemberHealth {
  /** False after a failed dial or check, true after a successful one (and before any). */
  alive: boolean;
  /** The last measured delay, ms; null before any successful check. */
  delayMs: number | null;
}

/** Live members, then dead ones, each in list order: fallback. */
export function fallbackOrder(members: readonly MemberHealth[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < members.length; i++) if (members[i]!.alive) out.push(i);
  for (let i = 0; i < members.length; i++) if (!members[i]!.alive) out.push(i);
  return out;
}

/**
 * urltest: the member with the lowest measured delay among live ones. The
 * current pick is kept unless it died or another beats it by more than
 * `toleranceMs` (so two members of about equal delay do not flap). Members
 * not measured yet rank after measured ones, in list order.
 */
export function urltestPick(members: readonly MemberHealth[], current: number, toleranceMs: number): number {
  let best = -1;
  for (let i = 0; i < members.length; i++) {
    const m = members[i]!;
    if (!m.alive) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const b = members[best]!;
    if (m.delayMs !== null && (b.delayMs === null || m.delayMs < b.delayMs)) best = i;
  }
  if (best < 0) return current >= 0 && current < members.length ? current : 0;
  const cur = current >= 0 && current < members.length ? members[current]! : null;
  if (cur === null || !cur.alive || best === current) return best;
  const bd = members[best]!.delayMs;
  if (cur.delayMs === null) return bd !== null ? best : current;
  return bd !== null && bd + toleranceMs < cur.delayMs ? best : current;
}

/** urltest's dial order: the pick, then the other live members by delay, then the dead. */
export function urltestOrder(members: readonly MemberHealth[], pick: number): number[] {
  const rest: number[] = [];
  for (let i = 0; i < members.length; i++) if (i !== pick && members[i]!.alive) rest.push(i);
  rest.sort((a, b) => (members[a]!.delayMs ?? Infinity) - (members[b]!.delayMs ?? Infinity) || a - b);
  const out = members[pick]?.alive === false ? rest : [pick, ...rest];
  for (let i = 0; i < members.length; i++) if (!members[i]!.alive && !out.includes(i)) out.push(i);
  if (!out.includes(pick)) out.push(pick);
  return out;
}

/** FNV-1a, 32 bits: a cheap, well-spread hash for short keys. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * loadbalance consistent-hash: rendezvous (highest random weight) hashing
 * of the destination over the members' names. A destination keeps its
 * member while that member lives; when one dies only its destinations move,
 * each to its next-highest member (which is also the order tried next).
 */
export function consistentHashOrder(members: readonly MemberHealth[], names: readonly string[], key: string): number[] {
  const keyHash = fnv1a(key);
  const weight = names.map((n) => fnv1a(n, keyHash));
  const idx = names.map((_, i) => i);
  idx.sort((a, b) => Number(members[b]!.alive) - Number(members[a]!.alive) || weight[b]! - weight[a]! || a - b);
  return idx;
}

/** loadbalance round-robin: live members starting at `counter`, then the dead. */
export function roundRobinOrder(members: readonly MemberHealth[], counter: number): number[] {
  const n = members.length;
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const i = (counter + k) % n;
    if (members[i]!.alive) out.push(i);
  }
  for (let i = 0; i < n; i++) if (!members[i]!.alive) out.push(i);
  return out;
}
