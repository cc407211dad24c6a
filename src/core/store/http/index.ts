/** elide's HTTP/1.1 transport for the S3 store's bodiless requests (docs/design.md §3.5). */
export { HttpTransport, ResponseBody } from './transport.js';
export type { HttpTransportOptions } from './transport.js';
