/** Test helpers shared by every package's tests. Nothing in a library imports this. */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TimeoutError } from '../errors.js'

/** Waits until `cond()` is true (polling every `everyMs`), or throws a TimeoutError after `timeoutMs`. */
export async function waitFor (cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

/** A fresh temporary directory and a function that removes it. */
export async function tempDir (prefix = 'herald-'): Promise<{ path: string, remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}
export * from './certificates.js'
