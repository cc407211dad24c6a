/** The control socket commands use to reach a volume's server (docs/design.md §3.5). */
export { listenControl, sendControl } from './control-socket.js';
export type { ControlServer } from './control-socket.js';
export { checkControl, controlOps, isControlOp, runControl } from './ops.js';
export type {
  ControlArgs,
  ControlHandlers,
  ControlOp,
  ControlRequest,
  ControlResult,
  MigrateArgs,
  MigrateResult,
  MigrateStatus,
} from './ops.js';
