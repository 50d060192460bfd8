/**
 * The `classifier:` config section: defaults, and the semantic checks
 * naming field paths (route.auto conflict, mark collisions, no interface,
 * host bits in bypass).
 */
import t from 'tap';
import { parseConfig } from '../../src/config/load.js';
import { isConfigError } from '../../src/config/errors.js';
import { defaultConfig } from '../../src/config/types.js';

async function problems(yaml: string): Promise<string[]> {
  try {
    await parseConfig(yaml, 'c.yaml');
    return [];
  } catch (err) {
    if (!isConfigError(err)) throw err;
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
}

t.test('defaults', async (t) => {
  const cfg = await parseConfig('classifier: { enabled: true, interfaces: [lan0] }\n', 'c.yaml');
  t.same(cfg.classifier, { ...defaultConfig().classifier, enabled: true, interfaces: ['lan0'] });
  t.same(defaultConfig().classifier, { enabled: false, interfaces: [], direction: 'ingress', tunMark: 0x164, bypass: [], default: null, sni: false });
});

t.test('semantic checks name the field', async (t) => {
  t.match(await problems('classifier: { enabled: true }\n'), [/^classifier\.enabled: the classifier needs at least one interface/]);
  t.match(await problems('classifier: { enabled: true, interfaces: [] }\n'), [/^classifier\.interfaces: the classifier needs at least one interface/]);
  t.match(await problems('route: { auto: true }\nclassifier: { enabled: true, interfaces: [lan0] }\n'), [/^classifier\.enabled: cannot be combined with route\.auto/]);
  t.match(await problems('route: { mark: 0x10 }\nclassifier: { enabled: true, interfaces: [lan0], tunMark: 0x10 }\n'), [/^classifier\.tunMark: tunMark 0x10 equals route\.mark/]);
  t.match(
    await problems('outbounds: [ { name: direct, type: direct, mark: 0x164 } ]\nclassifier: { enabled: true, interfaces: [lan0] }\n'),
    [/^outbounds\[0\]\.mark: mark 0x164 is classifier\.tunMark/],
  );
  t.match(await problems('classifier: { bypass: [203.0.113.7/24] }\n'), [/^classifier\.bypass\[0\]: 203\.0\.113\.7\/24 has host bits set; did you mean 203\.0\.113\.0\/24\?/]);
  t.match(await problems('classifier: { default: drop, direction: sideways }\n'), [/^classifier\.default/, /^classifier\.direction/]);
  t.same(await problems('classifier: { enabled: false, interfaces: [] }\n'), [], 'disabled: nothing to check');
  t.match(await problems('classifier: { sni: true }\n'), [/^classifier\.sni: the SNI filter is part of the classifier: it needs classifier\.enabled/]);
  t.match(await problems('route: { kernelPath: true }\n'), [/^route\.kernelPath: .* it needs route\.auto/]);
  t.match(await problems('classifier: { enabled: true, interfaces: [eth0], direction: egress, sni: true }\n'), [/^classifier\.sni: the SNI filter answers clients on the interface their packets arrive on: it needs classifier\.direction ingress/]);
  t.same(await problems('classifier: { enabled: true, interfaces: [eth0], sni: true }\n'), [], 'the SNI filter at ingress: fine');
});

t.test('with gateway mode: allowed, interfaces default to gateway.lan, marks and direction checked', async (t) => {
  t.same(await problems('gateway: { enabled: true, lan: [lan0] }\nclassifier: { enabled: true }\n'), [], 'no interfaces needed: gateway.lan');
  t.same(await problems('gateway: { enabled: true, lan: [lan0], mode: tproxy }\nclassifier: { enabled: true, interfaces: [lan0] }\n'), [], 'tproxy mode too');
  t.match(await problems('gateway: { enabled: true, lan: [lan0], tproxyMark: 0x164 }\nclassifier: { enabled: true }\n'), [/^classifier\.enabled: tunMark 0x164 equals gateway\.tproxyMark/]);
  t.match(await problems('gateway: { enabled: true, lan: [lan0] }\nclassifier: { enabled: true, direction: egress }\n'), [/^classifier\.direction: with gateway\.enabled the classifier must see the LAN's packets before routing/]);
});
