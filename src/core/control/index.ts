/** The control socket commands use to reach a volume's server (docs/design.md §3.5). */
export { controlOps, listenControl, sendControl } from './control-socket.js';
export type { ControlHandler, ControlOp, ControlRequest, ControlServer } from './control-socket.js';
