/** Write-ahead logs (docs/formats.md §3): the codec, the recovery scan and the log file. */
export { encodeWalRecordHeader } from './record.js';
export type { WalRecordHeader, WalRecordKind } from './record.js';
export { scanWal } from './scan.js';
export type { WalRecord, WalScanResult, WalScanOutcome } from './scan.js';
export { WalFile, walFileName, walSuffix, walTmpSuffix } from './wal-file.js';
export type { WalHeaderState, WalRecordRef } from './wal-file.js';
