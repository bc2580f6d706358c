import { defineConfig } from 'vitest/config'

// 'source' makes workspace packages resolve to their TypeScript sources (see each package.json's
// exports), so tests never run against a stale dist/.
const conditions = ['source', 'node', 'import', 'default']

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: ['*/src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks'
  }
})
