/** The `udp` section (NAT filtering, idle timeout, session cap): defaults, values, errors naming the field, the REQ-5 warning. */
import t from 'tap';
import { loadConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/types.js';
import { configFile as file, expectFieldErrors } from './config-file.js';
import { configWarnings } from '../../src/config/warnings.js';

t.test('defaults: endpoint-independent, 300 s (RFC 4787 REQ-5 asks at least 120), 16384 sessions', async (t) => {
  const d = defaultConfig().udp;
  t.same(d, { nat: 'endpoint-independent', idleTimeout: 300, maxSessions: 16384 });
  t.same((await loadConfig(file(t, 'log: { level: info }\n'))).udp, d);
  t.same((await loadConfig(file(t, 'udp: { nat: address-dependent }\n'))).udp, { ...d, nat: 'address-dependent' });
  t.same((await loadConfig(file(t, 'udp: { idleTimeout: 600, maxSessions: 100 }\n'))).udp, { ...d, idleTimeout: 600, maxSessions: 100 });
  t.same(configWarnings(defaultConfig()), [], 'no warning by default');
});

t.test('a bad value or key is reported with its field path', async (t) => {
  await expectFieldErrors(t, [
    ['udp: { nat: full-cone }\n', 'udp.nat'],
    ['udp: { idleTimeout: 0 }\n', 'udp.idleTimeout'],
    ['udp: { maxSessions: "lots" }\n', 'udp.maxSessions'],
    ['udp: { idletimeout: 30 }\n', 'udp.idletimeout'],
  ]);
});

t.test('an idle timeout under 2 minutes is allowed, with a warning naming REQ-5', async (t) => {
  const cfg = await loadConfig(file(t, 'udp: { idleTimeout: 30 }\n'));
  const w = configWarnings(cfg);
  t.equal(w.length, 1);
  t.match(w[0], /^udp\.idleTimeout: 30 s .*REQ-5/);
});
