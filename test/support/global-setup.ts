/**
 * Vitest globalSetup: the run's own temporary directory, then the shared
 * Ceph cluster (global-setup-ceph.ts). Every test file, and every program
 * the tests start, inherits TMPDIR pointing into the run's directory, so
 * whatever a test leaves behind (or a test killed halfway could not remove)
 * goes with it when the run ends; nothing accumulates in the system's /tmp.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import setupCeph from './global-setup-ceph.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const previous = process.env['TMPDIR'];
  const runDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'elide-test-run-'));
  process.env['TMPDIR'] = runDir;
  const teardownCeph = await setupCeph(project);
  return async () => {
    try {
      await teardownCeph();
    } finally {
      if (previous === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = previous;
      await fsp.rm(runDir, { recursive: true, force: true });
    }
  };
}
