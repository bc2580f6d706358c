#!/usr/bin/env node
// The `herald` command. A committed shim, so npm can link it before the TypeScript is built.
try {
  await import('../dist/cli.js')
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/cli.js')) {
    process.stderr.write('herald: the cli package is not built yet; run "npm run build" first\n')
    process.exit(2)
  }
  throw err
}
