/**
 * What the control API's route modules read and call: the running engine
 * (flows, policy, mode, DNS), the reload, the TUN and classifier counters,
 * the log stream, the groups. Built once by startControl (src/control/index.ts).
 */
import type { SluiceConfig } from '../config/types.js';
import type { Engine } from '../engine/engine.js';
import type { Logger } from '../engine/logger.js';
import type { ReloadResult } from '../commands/run-reload.js';
import type { ProxyGroups } from './groups.js';
import type { LogHub } from './log-hub.js';
import type { ApiServer } from './server.js';
import type { WorkerView } from '../workers/run-workers.js';

export interface TunCounters {
  rxPackets: number;
  rxBytes: number;
  rxBatches: number;
  rxErrors: number;
  txPackets: number;
  txBytes: number;
  txDropped: number;
}

export interface ControlContext {
  readonly engine: Engine;
  readonly log: Logger;
  readonly server: ApiServer;
  readonly logs: LogHub;
  /** GLOBAL plus whatever groups the config defines. */
  readonly groups: ProxyGroups;
  readonly version: string;
  /** Epoch ms of the start. */
  readonly startedAt: number;
  /** The config file, or 'built-in default'. */
  readonly configName: string;
  readonly statePath: string;
  /** The generated secret's file, null when api.secret is set inline. */
  readonly secretFile: string | null;
  /** The running configuration (rule sets as last loaded). */
  config(): SluiceConfig;
  tunStats(): TunCounters | null;
  classifierCounters(): unknown;
  /** Everything the TC program counts (actions, tproxy-ebpf assignments, the SNI filter): src/system/classifier-run.ts classifierStatus(). */
  classifierStatus?(): unknown;
  /** tun.queues > 1: the worker threads' counters and state (src/workers/run-workers.ts); absent or null otherwise. */
  readonly workers?: WorkerView | null;
  /** The reload SIGHUP does (src/commands/run-reload.ts). */
  reload(): Promise<ReloadResult>;
}
