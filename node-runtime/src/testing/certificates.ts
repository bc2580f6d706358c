/**
 * Certificates for TLS tests, made with the `openssl` command (a test prerequisite) in a temp dir,
 * with the same commands docs/tls.md gives to users.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/** A certificate and its private key, as PEM files. */
export interface CertFiles {
  readonly certFile: string
  readonly keyFile: string
}

/** A test certificate authority that issues server and client certificates. */
export interface TestCa extends CertFiles {
  /** A server certificate for `localhost` and 127.0.0.1 (or the names given), signed by this CA. */
  issueServer (name: string, altNames?: readonly string[]): Promise<CertFiles>
  /** A client certificate with common name `cn`, signed by this CA. */
  issueClient (name: string, cn: string): Promise<CertFiles>
}

function openssl (args: readonly string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd }, (err, _stdout, stderr) => {
      if (err !== null) reject(new Error(`openssl ${args.join(' ')} failed (is openssl installed? it is a test prerequisite): ${stderr || err.message}`, { cause: err }))
      else resolve()
    })
  })
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

/** Makes a CA named `name` in `dir` (files `<name>.crt`, `<name>.key`), valid for one day. */
export async function makeTestCa (dir: string, name: string): Promise<TestCa> {
  const certFile = join(dir, `${name}.crt`)
  const keyFile = join(dir, `${name}.key`)
  await openssl(['req', '-x509', ...EC_KEY, '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', `/CN=${name}`], dir)
  const issue = async (leaf: string, cn: string, ext: string): Promise<CertFiles> => {
    const files = { certFile: join(dir, `${leaf}.crt`), keyFile: join(dir, `${leaf}.key`) }
    const csr = join(dir, `${leaf}.csr`)
    const extFile = join(dir, `${leaf}.ext`)
    await writeFile(extFile, ext)
    await openssl(['req', ...EC_KEY, '-keyout', files.keyFile, '-out', csr, '-subj', `/CN=${cn}`], dir)
    await openssl(['x509', '-req', '-in', csr, '-CA', certFile, '-CAkey', keyFile, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-days', '1', '-out', files.certFile, '-extfile', extFile], dir)
    return files
  }
  return {
    certFile,
    keyFile,
    issueServer: (leaf, altNames = ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1']) =>
      issue(leaf, 'localhost', `subjectAltName=${altNames.join(',')}\nextendedKeyUsage=serverAuth\n`),
    issueClient: (leaf, cn) => issue(leaf, cn, 'extendedKeyUsage=clientAuth\n')
  }
}
