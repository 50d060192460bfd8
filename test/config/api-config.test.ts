/** The `api` section: defaults, the accepted listen forms, errors naming the field. */
import t from 'tap';
import { join } from 'node:path';
import { isConfigError } from '../../src/config/errors.js';
import { loadConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/types.js';
import { configFileIn as file, loadError } from './config-file.js';
import { isLocalOnly, parseListen } from '../../src/control/listen.js';

t.test('defaults: 127.0.0.1:9090, generated secret beside the state file', async (t) => {
  t.same(defaultConfig().api, { listen: '127.0.0.1:9090', secret: null, secretFile: null });
  t.same((await loadConfig(file(t, 'log: { level: info }\n').path)).api, defaultConfig().api);
  t.same((await loadConfig(file(t, 'api: { listen: null }\n').path)).api.listen, null, 'null turns the API off');
  const f = file(t, 'api: { listen: "[::1]:9191", secretFile: ./secret }\n');
  t.same((await loadConfig(f.path)).api, { listen: '[::1]:9191', secret: null, secretFile: join(f.dir, 'secret') }, 'a relative secretFile is taken from the config directory');
  t.same((await loadConfig(file(t, 'api: { listen: /run/sluice/api.sock }\n').path)).api.listen, '/run/sluice/api.sock', 'a unix socket path');
  t.same((await loadConfig(file(t, 'api: { listen: "0.0.0.0:9090", secret: "s3cret" }\n').path)).api, { listen: '0.0.0.0:9090', secret: 's3cret', secretFile: null }, 'any address with a secret');
});

t.test('mistakes are reported with their field path', async (t) => {
  for (const [text, path, message] of [
    ['api: { listen: "0.0.0.0:9090" }\n', 'api.listen', /reachable from other machines: set api.secret/],
    ['api: { listen: "192.0.2.1:9090" }\n', 'api.listen', /reachable from other machines/],
    ['api: { listen: "[::]:9090" }\n', 'api.listen', /reachable from other machines/],
    ['api: { listen: "127.0.0.1" }\n', 'api.listen', /host:port/],
    ['api: { listen: "127.0.0.1:70000" }\n', 'api.listen', /host:port/],
    ['api: { listen: "example.com:9090" }\n', 'api.listen', /host:port/],
    ['api: { listen: "relative/path.sock" }\n', 'api.listen', /host:port/],
    ['api: { listen: 9090 }\n', 'api.listen', /host:port/],
    ['api: { secret: "has space" }\n', 'api.secret', /printable characters without spaces/],
    ['api: { secret: "" }\n', 'api.secret', /printable/],
    ['api: { secret: "a", secretFile: "/x" }\n', 'api.secretFile', /only read when api.secret is not set/],
    ['api: { lisen: "127.0.0.1:9090" }\n', 'api.lisen', /./],
  ] as const) {
    const err = await loadError(t, text);
    t.ok(isConfigError(err), `${text.trim()}: a config error`);
    if (isConfigError(err)) {
      t.equal(err.problems[0]!.path, path, `names ${path}`);
      t.match(err.problems[0]!.message, message, err.problems[0]!.message);
    }
  }
});

t.test('listen forms and which are local only', async (t) => {
  t.same(parseListen('127.0.0.1:9090'), { kind: 'tcp', host: '127.0.0.1', port: 9090 });
  t.same(parseListen('[2001:db8::1]:80'), { kind: 'tcp', host: '2001:db8::1', port: 80 });
  t.same(parseListen('localhost:1'), { kind: 'tcp', host: 'localhost', port: 1 });
  t.same(parseListen('/run/x.sock'), { kind: 'unix', path: '/run/x.sock' });
  for (const bad of ['127.0.0.1:0', '1.2.3:80', '[1.2.3.4]:80', '::1:80', `/${'a'.repeat(107)}`, '127.0.0.1:']) t.equal(parseListen(bad), null, `${bad} is refused`);
  for (const local of ['127.0.0.1:1', '127.9.9.9:1', '[::1]:1', 'localhost:1', '/x']) t.ok(isLocalOnly(parseListen(local)!), `${local} is local`);
  for (const open of ['0.0.0.0:1', '192.0.2.1:1', '[::]:1', '[2001:db8::1]:1']) t.notOk(isLocalOnly(parseListen(open)!), `${open} is not`);
});
