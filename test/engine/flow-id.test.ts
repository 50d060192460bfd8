/**
 * Flow ids (src/engine/flow-registry.ts newFlowId): RFC 9562 version 4
 * UUIDs in their 36-character text, distinct across refills of the cached
 * entropy, each a string of its own (the shared text buffer is not aliased).
 */
import t from 'tap';
import { newFlowId } from '../../src/engine/flow-registry.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

t.test('ids are version 4 UUIDs, all distinct, over several entropy refills', async (t) => {
  const seen = new Set<string>();
  let bad = 0;
  for (let i = 0; i < 1000; i++) {
    const id = newFlowId();
    if (!UUID_V4.test(id)) bad++;
    seen.add(id);
  }
  t.equal(bad, 0, 'every id matches the RFC 9562 version 4 form');
  t.equal(seen.size, 1000, '1000 ids, 1000 distinct values');
});

t.test('an id keeps its value after later ids are made', async (t) => {
  const first = newFlowId();
  const copy = `${first}`.split('').join('');
  for (let i = 0; i < 300; i++) newFlowId();
  t.equal(first, copy);
});
