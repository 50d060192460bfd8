/** The `limits` section (SYN-flood and dial caps, the TCP buffer budget): defaults, values, errors naming the field. */
import t from 'tap';
import { loadConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/types.js';
import { configFile as file, expectFieldErrors } from './config-file.js';

t.test('defaults, and a partial section keeps the other defaults', async (t) => {
  t.same((await loadConfig(file(t, 'log: { level: info }\n'))).limits, defaultConfig().limits);
  t.same((await loadConfig(file(t, 'limits: { synCookieThreshold: 0, dialsPerSource: 8 }\n'))).limits, { ...defaultConfig().limits, synCookieThreshold: 0, dialsPerSource: 8 });
  t.equal(defaultConfig().limits.tcpBufferMiB, 128, 'the TCP buffer budget defaults to 128 MiB');
  t.equal((await loadConfig(file(t, 'limits: { tcpBufferMiB: 16 }\n'))).limits.tcpBufferMiB, 16);
});

t.test('a bad value or key is reported with its field path', async (t) => {
  await expectFieldErrors(t, [
    ['limits: { dials: 0 }\n', 'limits.dials'],
    ['limits: { pendingSyns: -5 }\n', 'limits.pendingSyns'],
    ['limits: { synCookieThreshold: "many" }\n', 'limits.synCookieThreshold'],
    ['limits: { dialsPerSorce: 3 }\n', 'limits.dialsPerSorce'],
    ['limits: { tcpBufferMiB: 0 }\n', 'limits.tcpBufferMiB'],
    ['limits: { tcpBufferMiB: 1.5 }\n', 'limits.tcpBufferMiB'],
  ]);
});
