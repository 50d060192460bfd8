/** SluiceError: every error class sluice throws on purpose has a stable code, and docs/errors.md lists every code. */
import t from 'tap';
import path from 'node:path';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { InvalidStateError, SluiceError, isSluiceError } from '../src/errors.js';
import { TcpConfigError } from '../src/tcp/config.js';
import { ConfigError } from '../src/config/errors.js';
import { PolicyError } from '../src/engine/policy/errors.js';
import { SniffError } from '../src/engine/sniff/result.js';
import { OutboundConfigError, OutboundError } from '../src/outbound/errors.js';
import { DnsError } from '../src/dns/errors.js';
import { NativeLoadError } from '../src/link/native.js';
import { LinkError } from '../src/link/errors.js';
import { PortIndex } from '../src/engine/policy/port-set.js';
import { TxBatch } from '../src/link/tx-batch.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

t.test('the error classes are SluiceErrors with their codes', async (t) => {
  const errors: [SluiceError, string][] = [
    [new TcpConfigError('x'), 'SLUICE_TCP_CONFIG'],
    [new ConfigError([]), 'SLUICE_CONFIG'],
    [new PolicyError('SLUICE_POLICY_TOO_DEEP', 'rules[0]', 'x'), 'SLUICE_POLICY_TOO_DEEP'],
    [new SniffError('SNIFF_ERR_BAD_LIMIT', 'x'), 'SNIFF_ERR_BAD_LIMIT'],
    [new OutboundError('SLUICE_OUTBOUND_TIMEOUT', 'x', { outbound: 'o' }), 'SLUICE_OUTBOUND_TIMEOUT'],
    [new OutboundConfigError('outbounds[0]', 'x'), 'SLUICE_OUTBOUND_CONFIG'],
    [new DnsError('SLUICE_DNS_TIMEOUT', 'x'), 'SLUICE_DNS_TIMEOUT'],
    [new NativeLoadError('x'), 'SLUICE_NATIVE_MISSING'],
    [new LinkError('SLUICE_TUN_READ', 'x', 'EIO'), 'SLUICE_TUN_READ'],
    [new InvalidStateError('x'), 'SLUICE_INVALID_STATE'],
  ];
  for (const [e, code] of errors) {
    t.ok(isSluiceError(e) && e instanceof Error, `${e.constructor.name} is a SluiceError and an Error`);
    t.equal(e.code, code);
  }
  t.notOk(isSluiceError(new Error('plain')), 'a plain Error is not');
});

t.test('misuse throws InvalidStateError, with the message it always had', async (t) => {
  const ports = new PortIndex();
  ports.add(80, 80, 0);
  ports.build();
  t.throws(() => ports.add(1, 2, 0), { code: 'SLUICE_INVALID_STATE', message: 'PortIndex.add after build()' });
  const tx = new TxBatch(1 << 16, { writeRecords: () => 0 });
  t.throws(() => tx.commit(10), { code: 'SLUICE_INVALID_STATE', message: 'TxBatch.commit without reserve' });
});

t.test('docs/errors.md lists every SLUICE_ code used in src/', async (t) => {
  const doc = readFileSync(path.join(root, 'docs/errors.md'), 'utf8');
  const codes = new Set<string>();
  // Environment variables (read as env.SLUICE_X) share the prefix but are not error codes.
  const envNames = new Set<string>();
  for (const file of sources(path.join(root, 'src'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/'(SLUICE_[A-Z0-9_]+)'/g)) codes.add(m[1]!);
    for (const m of text.matchAll(/env\.(SLUICE_[A-Z0-9_]+)/g)) envNames.add(m[1]!);
  }
  for (const name of envNames) codes.delete(name);
  t.ok(codes.size > 40, `${codes.size} codes found`);
  const missing = [...codes].filter((c) => !doc.includes(`\`${c}\``));
  t.same(missing, [], 'none missing');
});
