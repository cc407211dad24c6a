export { checkMemoryLimit, MemoryBudget, type MemoryHolder } from './memory-budget.js';
