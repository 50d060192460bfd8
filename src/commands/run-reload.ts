/**
 * The reload's result type, where the control API imports it from. The
 * reload itself (SIGHUP and POST /v1/reload) is src/commands/reload.ts.
 */
export type { ReloadResult } from './reload.js';
