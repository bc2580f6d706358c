/** Node-only test helpers (temporary directories, certificates). Nothing in a library imports this. */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A fresh temporary directory and a function that removes it. */
export async function tempDir (prefix = 'herald-'): Promise<{ path: string, remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}
export * from './certificates.js'
