import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // The run's temporary directory (TMPDIR for every worker and child), and one
    // radosgw for the S3 tests, started in the background (test/support/ceph.ts).
    globalSetup: ['test/support/global-setup.ts'],
    env: { ELIDE_INVARIANTS: '1' },
  },
});
