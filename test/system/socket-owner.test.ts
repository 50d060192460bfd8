/**
 * SocketOwnerLookup (src/system/socket-owner.ts) over a fake /proc tree the
 * test builds (symlinks whose targets read "socket:[INODE]", an exe link, a
 * comm file) and an injected sock_diag answer: the process holding the
 * inode is found, the exe's " (deleted)" suffix is cut, comm stands in for
 * an unreadable exe, a socket no process holds gives pid null, a missing
 * socket null; answers are cached per 4-tuple for the TTL on an injected
 * clock, and recent owners are searched first.
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SocketOwnerLookup, type SockDiagFn } from '../../src/system/socket-owner.js';

function fakeProc(t: Test): { root: string; proc: (pid: number, o: { inodes: number[]; exe?: string; comm?: string }) => void } {
  const root = mkdtempSync(join(tmpdir(), 'sluice-fakeproc-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  return {
    root,
    proc: (pid, o) => {
      const dir = join(root, String(pid));
      mkdirSync(join(dir, 'fd'), { recursive: true });
      symlinkSync('/dev/null', join(dir, 'fd', '0'));
      o.inodes.forEach((ino, i) => symlinkSync(`socket:[${ino}]`, join(dir, 'fd', String(i + 3))));
      if (o.exe !== undefined) symlinkSync(o.exe, join(dir, 'exe'));
      if (o.comm !== undefined) writeFileSync(join(dir, 'comm'), `${o.comm}\n`);
    },
  };
}

const A = new Uint8Array([198, 19, 0, 1]);
const B = new Uint8Array([203, 0, 113, 2]);

t.test('finds the owner, cuts " (deleted)", falls back to comm, caches for the TTL', async (t) => {
  const { root, proc } = fakeProc(t);
  proc(100, { inodes: [11], exe: '/usr/bin/curl' });
  proc(200, { inodes: [21, 22], exe: '/opt/app/app (deleted)' });
  proc(300, { inodes: [31], comm: 'kworker-ish' });
  proc(400, { inodes: [] });
  const answers = new Map<number, { uid: number; inode: number } | null>([
    [1001, { uid: 1000, inode: 11 }],
    [1002, { uid: 0, inode: 22 }],
    [1003, { uid: 4242, inode: 31 }],
    [1004, { uid: 7, inode: 99 }],
    [1005, null],
  ]);
  let diagCalls = 0;
  const diag: SockDiagFn = (_p, _f, _l, lport) => {
    diagCalls++;
    return answers.get(lport) ?? null;
  };
  let now = 0;
  const o = new SocketOwnerLookup({ sockDiag: diag, procRoot: root, now: () => now, ttlMs: 2000 });
  t.same(await o.lookup('tcp', 4, A, 1001, B, 80), { uid: 1000, pid: 100, process: 'curl', processPath: '/usr/bin/curl' });
  t.same(await o.lookup('tcp', 4, A, 1002, B, 80), { uid: 0, pid: 200, process: 'app', processPath: '/opt/app/app' }, 'the " (deleted)" suffix is cut');
  t.same(await o.lookup('udp', 4, A, 1003, B, 53), { uid: 4242, pid: 300, process: 'kworker-ish', processPath: null }, 'comm when exe cannot be read');
  t.same(await o.lookup('tcp', 4, A, 1004, B, 80), { uid: 7, pid: null, process: null, processPath: null }, 'a socket no process holds: the uid alone');
  t.equal(await o.lookup('tcp', 4, A, 1005, B, 80), null, 'no such socket');
  t.match(o.stats, { lookups: 5, notFound: 1, noProcess: 1, cacheHits: 0 });
  const calls = diagCalls;
  now = 1999;
  await o.lookup('tcp', 4, A, 1001, B, 80);
  t.equal(diagCalls, calls, 'within the TTL the 4-tuple is answered from the cache');
  t.equal(o.stats.cacheHits, 1);
  now = 2000;
  await o.lookup('tcp', 4, A, 1001, B, 80);
  t.equal(diagCalls, calls + 1, 'after the TTL the kernel is asked again');
});

t.test('recent owners are searched first', async (t) => {
  const { root, proc } = fakeProc(t);
  proc(10, { inodes: [1, 2, 3], exe: '/usr/bin/firefox' });
  for (let pid = 11; pid < 60; pid++) proc(pid, { inodes: [1000 + pid], exe: `/bin/p${pid}` });
  const diag: SockDiagFn = (_p, _f, _l, lport) => ({ uid: 1000, inode: lport });
  const o = new SocketOwnerLookup({ sockDiag: diag, procRoot: root, ttlMs: 0 });
  t.match(await o.lookup('tcp', 4, A, 1, B, 443), { pid: 10, process: 'firefox' });
  const walked = o.stats.procScanned;
  t.ok(walked >= 50, `the first lookup walked newest first down to pid 10 (${walked} directories)`);
  t.match(await o.lookup('tcp', 4, A, 2, B, 443), { pid: 10 });
  t.equal(o.stats.procScanned, walked + 1, 'the next socket of the same process is found in the hot list at once');
  t.match(await o.lookup('tcp', 4, A, 1059, B, 443), { pid: 59, process: 'p59' }, 'the newest process is first in the walk');
});
