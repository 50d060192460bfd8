/**
 * Rate limits on the answers a connection gives to segments it does not
 * accept, so that a blind flood onto one 4-tuple cannot turn the stack into
 * an amplifier.
 */

/**
 * RFC 5961 7: challenge ACKs (and, before the handshake completes, the
 * SYN-ACKs and resets that answer unacceptable segments) are rate limited,
 * so a blind flood onto one 4-tuple draws at most this many per second.
 */
export const CHALLENGE_ACKS_PER_SECOND = 10;

/**
 * An unacceptable segment is answered with an ACK (RFC 9293 3.10.7.4); for
 * one without data (a pure ACK: keepalives, zero-window probes, or a blind
 * flood onto the tuple) at most one such answer per this many ms, as
 * Linux's tcp_invalid_ratelimit does. Segments with data are always
 * answered: a retransmission of data we already have needs its ACK.
 */
export const OUT_OF_WINDOW_ACK_INTERVAL_MS = 500;

export class AnswerLimiter {
  /** RFC 5961 7 rate limit: the current one-second window and what it has spent. */
  private challengeWindowAt = -Infinity;
  private challengeBudgetUsed = 0;
  private outOfWindowAckAt = -Infinity;
  /** Challenge ACKs (and SYN-RECEIVED answers) not sent because of the RFC 5961 7 rate limit. */
  challengesSuppressed = 0;
  /** ACKs not sent to unacceptable pure ACKs (OUT_OF_WINDOW_ACK_INTERVAL_MS). */
  outOfWindowAcksSuppressed = 0;

  /** At most one ACK per OUT_OF_WINDOW_ACK_INTERVAL_MS to unacceptable segments without data. */
  spendOutOfWindowAck(now: number): boolean {
    if (now - this.outOfWindowAckAt < OUT_OF_WINDOW_ACK_INTERVAL_MS) {
      this.outOfWindowAcksSuppressed++;
      return false;
    }
    this.outOfWindowAckAt = now;
    return true;
  }

  /** RFC 5961 7: at most CHALLENGE_ACKS_PER_SECOND answers to suspect segments per second. */
  spendChallenge(now: number): boolean {
    if (now - this.challengeWindowAt >= 1000) {
      this.challengeWindowAt = now;
      this.challengeBudgetUsed = 0;
    }
    if (this.challengeBudgetUsed >= CHALLENGE_ACKS_PER_SECOND) {
      this.challengesSuppressed++;
      return false;
    }
    this.challengeBudgetUsed++;
    return true;
  }
}
