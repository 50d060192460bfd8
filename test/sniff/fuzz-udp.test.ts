/**
 * 50,000 mutated or truncated copies of every UDP fixture into every parser:
 * nothing throws and every verdict is well-formed. The QUIC v2 fixture runs
 * in fuzz-udp-v2.test.ts and fuzz-quic-sealed.test.ts fuzzes what lies behind
 * the AEAD.
 */
import t from 'tap';
import { runUdpFuzz } from './fuzz-udp-runner.js';

t.test('DNS datagrams, mutated on the wire', (t) => runUdpFuzz(t, 'dns'));
t.test('RFC 9001 A.2 client Initial, mutated on the wire', (t) => runUdpFuzz(t, 'v1'));
