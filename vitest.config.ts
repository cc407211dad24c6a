import os from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One test file per core, not vitest's default of one fewer: most of a file's
    // time is spent in the programs it starts (elide, fio, nbdcopy), not in the
    // worker, so on a 2-core machine the default ran one file at a time and left
    // a core idle (900 s against 660 s here).
    maxWorkers: os.availableParallelism(),
    // The run's temporary directory (TMPDIR for every worker and child), and one
    // radosgw for the S3 tests, started in the background (test/support/ceph.ts).
    globalSetup: ['test/support/global-setup.ts'],
    env: { ELIDE_INVARIANTS: '1' },
  },
});
