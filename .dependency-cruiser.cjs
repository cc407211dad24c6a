/**
 * The import rules of docs/architecture.md, checked by
 * test/static/architecture.test.ts (which also checks the folder graph
 * against the table there).
 */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'A module cycle means two concepts that cannot be understood apart.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'folder-through-index',
      comment: 'A folder under src/core is entered only through its index.ts.',
      severity: 'error',
      from: { path: '^src/core/([^/]+)/' },
      to: {
        path: '^src/core/[^/]+/.',
        pathNot: ['^src/core/$1/', '^src/core/[^/]+/index[.]ts$'],
      },
    },
    {
      name: 'kernel-imports-no-folder',
      comment: 'The files directly in src/core are the kernel every folder may use.',
      severity: 'error',
      from: { path: '^src/core/[^/]+[.]ts$', pathNot: '^src/core/index[.]ts$' },
      to: { path: '^src/core/[^/]+/' },
    },
    {
      name: 'cli-through-core-index',
      comment: 'The CLI sees the engine only through src/core/index.ts.',
      severity: 'error',
      from: { path: '^src/(commands|cli)/' },
      to: { path: '^src/core/', pathNot: '^src/core/index[.]ts$' },
    },
    {
      name: 'core-without-cli',
      comment: 'The engine never depends on the CLI layer.',
      severity: 'error',
      from: { path: '^src/core/' },
      to: { path: '^src/(commands|cli)/' },
    },
  ],
  options: {
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
  },
};
