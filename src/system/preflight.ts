/**
 * Before installing anything: check that the routing table, the rule
 * priorities and the fwmark `route:` asks for are free on this machine, so
 * sluice never adds to (and later deletes) state someone else owns. Each
 * collision is reported naming the config field to change.
 */
import type { RouteConfig } from '../config/types.js';
import { runCommand, SystemStateError, type Runner } from './exec.js';
import { NFT_TABLE } from './routing.js';

export interface Collision {
  /** Config field path, e.g. "route.priority". */
  field: string;
  message: string;
}

/** `ip rule show` lines as "PRIORITY:\tSELECTOR..." */
export function parseRules(text: string): { priority: number; text: string }[] {
  const out: { priority: number; text: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):\s+(.*)$/.exec(line.trim());
    if (m !== null) out.push({ priority: Number(m[1]), text: m[2]!.trim() });
  }
  return out;
}

function families(route: RouteConfig): (4 | 6)[] {
  const out: (4 | 6)[] = [];
  if (route.include.some((c) => !c.includes(':'))) out.push(4);
  if (route.include.some((c) => c.includes(':'))) out.push(6);
  return out;
}

export async function findCollisions(route: RouteConfig, runner: Runner = runCommand): Promise<Collision[]> {
  const found: Collision[] = [];
  const markHex = `0x${route.mark.toString(16)}`;
  const priorities = route.exclude.length > 0 ? [route.priority - 1, route.priority] : [route.priority];
  for (const family of families(route)) {
    const ip = family === 6 ? ['ip', '-6'] : ['ip'];
    const label = family === 6 ? 'ip -6 rule' : 'ip rule';
    const rules = await runner([...ip, 'rule', 'show']);
    if (rules.code !== 0) throw new SystemStateError('PREFLIGHT_COLLISION', `${label} show failed: ${rules.stderr.trim()}`);
    for (const r of parseRules(rules.stdout)) {
      if (priorities.includes(r.priority)) {
        const own = r.priority === route.priority ? '' : ' (the exclude rules use route.priority - 1)';
        found.push({ field: 'route.priority', message: `priority ${r.priority} is already used by "${label}" entry "${r.priority}: ${r.text}"${own}; pick a free priority` });
      }
      if (new RegExp(`\\bfwmark ${markHex}\\b`).test(r.text)) {
        found.push({ field: 'route.mark', message: `fwmark ${markHex} is already used by "${label}" entry "${r.priority}: ${r.text}"; pick another mark` });
      }
      if (new RegExp(`\\b(?:lookup|table) ${route.table}\\b`).test(r.text)) {
        found.push({ field: 'route.table', message: `table ${route.table} is already looked up by "${label}" entry "${r.priority}: ${r.text}"; pick a free table` });
      }
    }
    const routes = await runner([...ip, 'route', 'show', 'table', String(route.table)]);
    const first = routes.stdout.trim().split('\n')[0] ?? '';
    if (routes.code === 0 && first !== '') {
      found.push({ field: 'route.table', message: `table ${route.table} already holds ${family === 6 ? 'IPv6 ' : ''}routes (first: "${first}"); pick an empty table` });
    }
  }
  if (route.strictDns) {
    const nft = await runner(['nft', 'list', 'table', NFT_TABLE.family, NFT_TABLE.name]);
    if (nft.code === 0) {
      found.push({
        field: 'route.strictDns',
        message: `an nftables table "${NFT_TABLE.family} ${NFT_TABLE.name}" already exists (left by a run whose state file is gone?); check it and remove it with "nft delete table ${NFT_TABLE.family} ${NFT_TABLE.name}"`,
      });
    } else if (nft.code === 127) {
      found.push({ field: 'route.strictDns', message: `needs nft(8), which is not installed: ${nft.stderr.trim()}` });
    }
  }
  return found;
}

/** Throws PREFLIGHT_COLLISION naming every colliding field; `where` prefixes each line (e.g. the config file). */
export async function preflight(route: RouteConfig, where: string, runner: Runner = runCommand): Promise<void> {
  const found = await findCollisions(route, runner);
  if (found.length === 0) return;
  throw new SystemStateError(
    'PREFLIGHT_COLLISION',
    found.map((c) => `${where}: ${c.field}: ${c.message}`).join('\n') + '\nnothing was installed',
  );
}
