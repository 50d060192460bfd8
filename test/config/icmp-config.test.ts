/** The `icmp` section (echo forwarding): defaults, values, errors naming the field. */
import t from 'tap';
import { loadConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/types.js';
import { configFile as file, expectFieldErrors } from './config-file.js';
import { describeChanges, planReload } from '../../src/config/reload-plan.js';

t.test('defaults: forward, and unreachable for what cannot be forwarded (never a faked reply)', async (t) => {
  t.same(defaultConfig().icmp, { echo: 'forward', unforwardable: 'unreachable' });
  t.same((await loadConfig(file(t, 'log: { level: info }\n'))).icmp, defaultConfig().icmp);
  t.same((await loadConfig(file(t, 'icmp: { echo: reply }\n'))).icmp, { echo: 'reply', unforwardable: 'unreachable' });
  t.same((await loadConfig(file(t, 'icmp: { unforwardable: drop }\n'))).icmp, { echo: 'forward', unforwardable: 'drop' });
});

t.test('a bad value or key is reported with its field path', async (t) => {
  await expectFieldErrors(t, [
    ['icmp: { echo: fake }\n', 'icmp.echo'],
    ['icmp: { unforwardable: forward }\n', 'icmp.unforwardable'],
    ['icmp: { ecko: reply }\n', 'icmp.ecko'],
  ]);
});

t.test('a reload applies icmp and says so', async (t) => {
  const a = defaultConfig();
  const b = { ...a, icmp: { echo: 'reply' as const, unforwardable: 'unreachable' as const } };
  const plan = planReload(a, a, b);
  t.same(plan.needRestart, [], 'nothing needs a restart');
  t.equal(plan.next.icmp.echo, 'reply', 'the new value runs');
  t.ok(describeChanges(a, b).some((line) => line.includes('icmp.echo')), 'the change is named');
});
