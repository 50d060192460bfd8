/**
 * The one reload of a running `sluice run`: SIGHUP and POST /v1/reload
 * both call it. Today it re-reads the rule-set files and swaps the policy
 * (Engine.reload), then brings the classifier's maps and the kernel path's
 * sets in line with it, live.
 * The result says what changed, or why nothing did (the running policy
 * stays then).
 */
import type { Engine, ReloadResult } from '../engine/engine.js';
import type { RunningClassifier } from '../system/classifier-run.js';
import type { RunningKernelPath } from '../system/kernel-path.js';

export type { ReloadResult } from '../engine/engine.js';

export async function reloadRunning(engine: Engine, classifier: RunningClassifier | null, kernelPath: RunningKernelPath | null = null): Promise<ReloadResult> {
  const r = await engine.reload();
  if (!r.ok) return r;
  try {
    // The classifier's maps follow the reloaded policy live (no detach).
    classifier?.update(engine.activeConfig);
  } catch (err) {
    return { ok: false, errors: [`the policy was reloaded, but the classifier's maps could not follow: ${(err as Error).message}`] };
  }
  try {
    // The kernel path's nftables sets too (one transaction).
    await kernelPath?.update(engine.activeConfig);
  } catch (err) {
    return { ok: false, errors: [`the policy was reloaded, but the kernel path's sets could not follow: ${(err as Error).message}`] };
  }
  return r;
}
