import js from '@eslint/js'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'bench/results/**', '.herald-data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: './tsconfig.check.json', tsconfigRootDir: import.meta.dirname }
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
      '@typescript-eslint/no-redundant-type-constituents': 'off',
      '@typescript-eslint/only-throw-error': 'error'
    }
  },
  {
    // [ARCH-PURE-1] @herald/protocol is browser-safe: relative imports only (no Node built-ins, no
    // npm packages); its tsconfig has no Node types, so Buffer or setImmediate fail its build too
    files: ['protocol/src/**/*.ts'],
    ignores: ['protocol/src/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^[^.]', message: '@herald/protocol is browser-safe: only relative imports (Node-only code belongs in @herald/node-runtime)' }] }]
    }
  },
  {
    // [ARCH-PURE-1] the browser-safe part of @herald/client-endpoint (client-endpoint/tsconfig.browser.json):
    // only relative imports and @herald/protocol; no Node built-ins, no better-sqlite3, no node-runtime
    files: [
      'client-endpoint/src/client-endpoint-core.ts', 'client-endpoint/src/client-subscription.ts', 'client-endpoint/src/herald-event.ts',
      'client-endpoint/src/positions/position-store.ts', 'client-endpoint/src/positions/memory-position-store.ts', 'client-endpoint/src/browser/**/*.ts'
    ],
    ignores: ['client-endpoint/src/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^(?!\\.|@herald/protocol$)', message: 'the browser-safe client core imports only relative files and @herald/protocol (Node-only code belongs in client-endpoint.ts, positions/sqlite-*, or @herald/node-runtime)' }] }]
    }
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: globals.node }
  },
  {
    // the demo page's script runs in a browser (served by herald demo / herald broker --ws-demo-page)
    // and so does the broker dashboard's (broker/web, served at /admin on the metrics port)
    files: ['cli/web/**/*.js', 'broker/web/**/*.js'],
    languageOptions: { globals: globals.browser }
  }
)
