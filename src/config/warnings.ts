/**
 * Things a valid configuration may still get wrong, said as warnings (by
 * `sluice check` on stderr, by `sluice run` in its log) rather than refused:
 * the config works, but a part of it can never take effect.
 */
import type { RuleCondition, SluiceConfig } from './types.js';

const OWNER_KEYS = ['uid', 'processName', 'processPath'] as const;

/** The first owner key (uid / processName / processPath) used in `c` or below, as a field path, or null. */
function ownerKeyIn(c: RuleCondition, path: string): string | null {
  for (const k of OWNER_KEYS) if (c[k] !== undefined) return `${path}.${k}`;
  for (const key of ['and', 'or'] as const) {
    const subs = c[key];
    if (subs === undefined) continue;
    for (let i = 0; i < subs.length; i++) {
      const found = ownerKeyIn(subs[i]!, `${path}.${key}[${i}]`);
      if (found !== null) return found;
    }
  }
  return c.not !== undefined ? ownerKeyIn(c.not, `${path}.not`) : null;
}

export function configWarnings(cfg: Pick<SluiceConfig, 'rules' | 'route' | 'gateway'> & Partial<Pick<SluiceConfig, 'udp'>>): string[] {
  const out: string[] = [];
  // RFC 4787 REQ-5: a UDP mapping must not expire in less than 2 minutes
  // (REQ-5a's shorter timers for well-known ports apply to DNS already).
  if (cfg.udp !== undefined && cfg.udp.idleTimeout < 120) {
    out.push(`udp.idleTimeout: ${cfg.udp.idleTimeout} s is below the 120 s RFC 4787 REQ-5 asks of a NAT; games, VoIP and P2P keep-alives may find their mapping gone`);
  }
  const ownerRules = cfg.rules.map((r, i) => ownerKeyIn(r, `rules[${i}]`)).filter((p): p is string => p !== null);
  if (ownerRules.length > 0 && !cfg.route.auto) {
    out.push(
      `${ownerRules[0]}: uid / processName / processPath hold only for flows from this machine, steered into the TUN by route.auto (workstation mode); route.auto is off, so ${ownerRules.length === 1 ? 'this rule' : `these ${ownerRules.length} rules`} will only match flows this host routes into the TUN itself, and never gateway or TPROXY flows`,
    );
  }
  return out;
}
