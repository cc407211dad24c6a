/** Garbage collection (docs/design.md §3.7): liveness planning and compaction runs. */
export { planGc } from './plan.js';
export type { GcPass, GcPlanInput, GcSegment } from './plan.js';
export { collectVolume, summarizeGc } from './collector.js';
export type { GcOptions, GcRunResult, GcSubject, GcVolumeResult } from './collector.js';
