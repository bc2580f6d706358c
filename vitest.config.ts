import { defineConfig } from 'vitest/config'

// 'source' makes workspace packages resolve to their TypeScript sources (see each package.json's
// exports), so tests never run against a stale dist/.
const conditions = ['source', 'node', 'import', 'default']

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: ['*/src/**/*.test.ts', 'test/**/*.test.ts'],
    // stops the run at once, with one line, if a system package the tests need is missing
    globalSetup: ['test/support/prerequisites.mjs'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks'
  }
})
