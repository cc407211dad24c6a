export { checkMemoryLimit, MemoryBudget, type MemoryHolder } from './memory-budget.js';
export { collectGarbage, favourSmallHeap } from './heap.js';
