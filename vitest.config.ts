import { defineConfig } from 'vitest/config'

// 'source' makes workspace packages resolve to their TypeScript sources (see each package.json's
// exports), so tests never run against a stale dist/.
const conditions = ['source', 'node', 'import', 'default']
// vitest hands the SSR conditions to its workers as node --conditions, which require() obeys too:
// with 'import' there, require('ws') in mqtt.js got ws' ESM wrapper (no createWebSocketStream) and
// every ws:// connection failed. import is Node's own condition for import statements anyway.
const nodeConditions = conditions.filter((c) => c !== 'import')

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions: nodeConditions, externalConditions: nodeConditions } },
  test: {
    include: ['*/src/**/*.test.ts', 'test/**/*.test.ts'],
    // stops the run at once, with one line, if a system package the tests need is missing
    globalSetup: ['test/support/prerequisites.mjs'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks'
  }
})
