/** The QUIC v2 (RFC 9369) Initial share of the UDP fuzz (see fuzz-udp.test.ts). */
import t from 'tap';
import { runUdpFuzz } from './fuzz-udp-runner.js';

t.test('QUIC v2 client Initial, mutated on the wire', (t) => runUdpFuzz(t, 'v2'));
