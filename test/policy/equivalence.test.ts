/**
 * The indexed matcher against the naive in-order evaluator in reference.ts:
 * 5,000 random flows over 500 random rules (single keys, ANDed keys, and/or/not,
 * rule sets), for several seeds. Any difference is a bug in the index.
 */
import t from 'tap';
import { compilePolicy } from '../../src/engine/policy/index.js';
import { referenceMatch } from './reference.js';
import { Rng, randomFlow, randomPolicy } from './random-policy.js';

function fmt(ctx: ReturnType<typeof randomFlow>): string {
  return JSON.stringify({ ...ctx, dst: [...ctx.dst], src: [...ctx.src] });
}

for (const seed of [1, 0xdecaf, 20261125]) {
  t.test(`seed ${seed}: 5,000 flows over 500 rules match the naive evaluator`, async (t) => {
    const input = randomPolicy(seed, 500);
    const policy = compilePolicy(input);
    const st = policy.stats;
    // the generator must exercise every path of the matcher
    t.ok(st.indexed > 100 && st.candidates > 50 && st.residual > 10, `mix: ${JSON.stringify(st)}`);
    const r = new Rng(seed * 7 + 1);
    const hits = new Set<number>();
    let finals = 0;
    let mismatches = 0;
    for (let i = 0; i < 5000; i++) {
      const ctx = randomFlow(r);
      const want = referenceMatch(input, ctx);
      const got = policy.matchIndex(ctx);
      if (got !== want) {
        if (mismatches++ < 5) t.fail(`flow ${i}: indexed ${got} (${policy.describe(got)}), reference ${want} (${policy.describe(want)}); ${fmt(ctx)}`);
      }
      const res = policy.match(ctx);
      if (res.ruleIndex !== got || res.outbound !== (got < 0 ? 'direct' : input.rules![got]!.outbound)) t.fail(`match() disagrees with matchIndex() on flow ${i}`);
      if (want < 0) finals++;
      else hits.add(want);
    }
    t.equal(mismatches, 0, 'no mismatches');
    t.ok(hits.size >= 40, `flows hit ${hits.size} distinct rules`);
    t.ok(finals > 0, `${finals} flows fell through to final`);
  });
}

t.test('composite-heavy policy: ANDed rules only reach the candidate path', async (t) => {
  const input = randomPolicy(99, 500);
  // keep only multi-key and logical rules so candidates and residual carry the load
  input.rules = input.rules!.filter((r) => Object.keys(r).length > 2 || 'and' in r || 'or' in r || 'not' in r);
  const policy = compilePolicy(input);
  t.equal(policy.stats.indexed, 0);
  const r = new Rng(4242);
  let bad = 0;
  for (let i = 0; i < 5000; i++) {
    const ctx = randomFlow(r);
    if (policy.matchIndex(ctx) !== referenceMatch(input, ctx)) bad++;
  }
  t.equal(bad, 0);
});
