/** elide's HTTP/1.1 transport for the S3 store's bodiless requests (docs/design.md §3.5). */
export { HttpTransport } from './transport.js';
export { ResponseBody } from './response-body.js';
export type { HttpTransportOptions } from './request.js';
