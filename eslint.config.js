import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

/** Import patterns src/core refuses; `inside` are the relative forms of "a file inside a folder". */
function corePatterns(inside) {
  return [
    { group: ['@oclif/*', 'ora', 'cli-table3'], message: 'core must not import CLI packages' },
    { group: ['**/commands/**', '**/cli/**'], message: 'core must not import the CLI layer' },
    {
      group: inside.flatMap((pattern) => [pattern, `!${pattern.slice(0, -1)}index.js`]),
      message: 'import another folder through its index.js (docs/architecture.md)',
    },
  ];
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'man/**', 'bench/out/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      // Split by concept before a file or function grows past these (docs/architecture.md).
      'max-lines': ['error', { max: 600 }],
      'max-lines-per-function': ['error', { max: 100 }],
    },
  },
  {
    // The core engine never depends on the CLI layer or on terminal UI packages,
    // and a folder under src/core is entered only through its index.ts.
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: corePatterns(['./*/*', '../*/*']) }],
      'no-console': 'error',
    },
  },
  {
    // One level down (src/core/<folder>/<sub>/): the same rules, a level further up.
    files: ['src/core/*/*/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: corePatterns(['./*/*', '../../*/*']) }],
    },
  },
  {
    // The CLI sees the engine only through src/core/index.ts.
    files: ['src/commands/**/*.ts', 'src/cli/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/core/*', '!**/core/index.js', '**/core/*/**'],
              message: 'the CLI imports the engine only from src/core/index.js',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: { globals: { ...globals.node } },
  },
);
