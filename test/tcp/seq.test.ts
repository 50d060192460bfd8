import t from 'tap';
import { inWindow, seqAdd, seqGeq, seqGt, seqLeq, seqLt, seqMax, seqMin, seqSub } from '../../src/tcp/seq.js';

t.test('ordering across the 2^32 wrap', async (t) => {
  const near = 0xffffff00;
  const after = seqAdd(near, 0x200); // 0x100, wrapped
  t.equal(after, 0x100);
  t.ok(seqLt(near, after), 'a number just before the wrap is less than one just after');
  t.ok(seqGt(after, near));
  t.ok(seqLeq(near, near) && seqGeq(near, near));
  t.equal(seqSub(after, near), 0x200);
  t.equal(seqSub(near, after), -0x200);
  t.equal(seqMax(near, after), after);
  t.equal(seqMin(near, after), near);
  t.notOk(near < after, 'raw < gets it wrong, which is why seq.ts exists');
});

t.test('the 2^31 horizon', async (t) => {
  t.ok(seqLt(0, 0x7fffffff));
  t.ok(seqGt(0, 0x80000001), 'more than 2^31 ahead counts as behind');
});

t.test('window membership including wrap and empty windows', async (t) => {
  t.ok(inWindow(0xfffffff0, 0xffffffe0, 0x40));
  t.ok(inWindow(0x10, 0xffffffe0, 0x40), 'wrapped part of the window');
  t.notOk(inWindow(0x20, 0xffffffe0, 0x40), 'one past the end');
  t.notOk(inWindow(0xffffffdf, 0xffffffe0, 0x40), 'one before the start');
  t.notOk(inWindow(5, 5, 0), 'nothing is inside an empty window');
});
