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
    // [ARCH-PURE-1] the client endpoint's browser code likewise: relative imports and @herald/protocol
    // only; client-endpoint/tsconfig.browser.json builds it without Node types
    files: ['client-endpoint/src/browser/**/*.ts'],
    ignores: ['client-endpoint/src/browser/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^(?!\\.|@herald/protocol$)', message: 'client-endpoint/src/browser is browser-safe: only relative imports and @herald/protocol (Node-only code stays outside src/browser)' }] }]
    }
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: globals.node }
  },
  {
    // the demo page's script runs in a browser (served by herald demo / herald broker --ws-demo-page)
    files: ['cli/web/**/*.js'],
    languageOptions: { globals: globals.browser }
  }
)
