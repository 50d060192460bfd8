/**
 * uid / processName / processPath conditions: matched against the owner the
 * engine found for the flow's client socket, never holding when the owner is
 * unknown (gateway and TPROXY flows), indexed as residual or verified inside
 * composite rules, and reported as needing the owner lookup.
 */
import t from 'tap';
import { compilePolicy } from '../../src/engine/policy/compile.js';
import { PolicyError } from '../../src/engine/policy/errors.js';
import type { MatchContext } from '../../src/engine/policy/types.js';

const ctx = (over: Partial<MatchContext> = {}): MatchContext => ({
  network: 'tcp',
  inbound: 'tun',
  family: 4,
  dst: new Uint8Array([203, 0, 113, 2]),
  dstPort: 443,
  src: new Uint8Array([198, 19, 0, 1]),
  srcPort: 40000,
  domain: null,
  protocol: null,
  ...over,
});

const outbounds = [{ name: 'direct' }, { name: 'block' }, { name: 'proxy' }];

t.test('owner conditions match the flow owner and nothing else', async (t) => {
  const p = compilePolicy({
    rules: [
      { uid: [4242, '1000'], outbound: 'block' },
      { processName: ['fetchy'], outbound: 'block' },
      { processPath: ['/opt/app/bin/app'], domainSuffix: ['example.com'], outbound: 'proxy' },
      { not: { uid: [0] }, port: [8443], outbound: 'proxy' },
    ],
    final: 'direct',
    outbounds,
  });
  t.ok(p.needsOwner, 'the policy asks for owner lookups');
  t.equal(p.match(ctx({ uid: 4242, process: 'curl' })).ruleIndex, 0, 'uid 4242');
  t.equal(p.match(ctx({ uid: 1000 })).ruleIndex, 0, 'a uid given as a string');
  t.equal(p.match(ctx({ uid: 0, process: 'curl', processPath: '/usr/bin/curl' })).ruleIndex, -1, "root's curl falls through");
  t.equal(p.match(ctx({ uid: 0, process: 'fetchy' })).ruleIndex, 1, 'the process name');
  t.equal(p.match(ctx({ uid: 0, process: 'Fetchy' })).ruleIndex, -1, 'process names are case-sensitive');
  t.equal(p.match(ctx({ uid: 0, processPath: '/opt/app/bin/app', domain: 'www.example.com' })).ruleIndex, 2, 'path and domain together');
  t.equal(p.match(ctx({ uid: 0, processPath: '/opt/app/bin/app', domain: 'other.test' })).ruleIndex, -1, 'the path alone is not enough');
  t.equal(p.match(ctx()).ruleIndex, -1, 'unknown owner: no owner condition holds');
  t.equal(p.match(ctx({ uid: null, process: null, processPath: null, inbound: 'tproxy' })).ruleIndex, -1, 'a TPROXY flow (owner null) matches none');
  t.equal(p.match(ctx({ uid: 1, dstPort: 8443 })).ruleIndex, 3, 'not uid 0 holds for uid 1');
  t.match(p.describe(0), /uid=\[4242, 1000\] -> block/, 'descriptions name the key');
});

t.test('a policy without owner conditions does not ask for lookups', async (t) => {
  const p = compilePolicy({ rules: [{ port: [443], outbound: 'block' }], final: 'direct', outbounds });
  t.notOk(p.needsOwner);
});

t.test('bad owner values are refused with the field path', async (t) => {
  for (const [rule, path] of [
    [{ uid: [-1], outbound: 'block' }, 'rules[0].uid[0]'],
    [{ uid: ['root'], outbound: 'block' }, 'rules[0].uid[0]'],
    [{ processName: ['bin/curl'], outbound: 'block' }, 'rules[0].processName[0]'],
    [{ processPath: ['curl'], outbound: 'block' }, 'rules[0].processPath[0]'],
    [{ and: [{ processPath: [''] }], outbound: 'block' }, 'rules[0].and[0].processPath[0]'],
  ] as const) {
    let err: unknown = null;
    try {
      compilePolicy({ rules: [rule], final: 'direct', outbounds });
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof PolicyError && err.message.includes(path), `${JSON.stringify(rule)} is refused naming ${path}: ${String(err)}`);
  }
});
