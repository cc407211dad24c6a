/** NBD serving: the public surface of src/core/nbd. */
export { NbdServer } from './server.js';
export type { ListenAddress } from './server.js';
export type { NbdExport, NbdBackend } from './export.js';
export { nbdDefaultHost, nbdDefaultPort, nbdPayloadBytesMax } from './limits.js';
export { serveVolumes } from './serve.js';
export type { NbdService, ServeOptions } from './serve.js';
