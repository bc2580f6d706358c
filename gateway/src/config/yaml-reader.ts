/**
 * Reading a YAML configuration with errors that name the file, the line and the path of the
 * offending entry: `gateway.yaml:12: mapping[2].raise: unknown event "tempreature"`.
 */
import { LineCounter, isMap, isScalar, isSeq, parseDocument } from 'yaml'
import type { Document, Node } from 'yaml'
import { ConfigError } from '@herald/protocol'

/** One place in the document: a node (or its absence) and where it is. */
export class YamlCursor {
  readonly #file: string
  readonly #lines: LineCounter
  readonly #node: Node | null
  readonly path: string
  readonly #line: number

  constructor (file: string, lines: LineCounter, node: Node | null, path: string, line: number) {
    this.#file = file
    this.#lines = lines
    this.#node = node
    this.path = path
    this.#line = node?.range != null ? lines.linePos(node.range[0]).line : line
  }

  /** A ConfigError naming file, line and path. */
  error (message: string): ConfigError {
    return new ConfigError(`${this.#file}:${this.#line}: ${this.path === '' ? '' : `${this.path}: `}${message}`)
  }

  get present (): boolean {
    return this.#node !== null && !(isScalar(this.#node) && this.#node.value === null)
  }

  /** True if the node is a mapping (not a single value or a list). */
  get isMapping (): boolean {
    return this.#node !== null && isMap(this.#node)
  }

  /** The entry `key` of a mapping (absent entries give a cursor that is not `present`). */
  get (key: string): YamlCursor {
    const node = this.#node
    if (node !== null && !isMap(node)) throw this.error('must be a mapping of keys to values')
    const child = node === null ? null : (node.get(key, true) as Node | undefined) ?? null
    return new YamlCursor(this.#file, this.#lines, child, this.path === '' ? key : `${this.path}.${key}`, this.#line)
  }

  /** Throws if the mapping has keys other than `allowed`, naming the first one. */
  only (allowed: readonly string[]): this {
    const node = this.#node
    if (node === null) return this
    if (!isMap(node)) throw this.error('must be a mapping of keys to values')
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key)
      if (!allowed.includes(key)) {
        const at = new YamlCursor(this.#file, this.#lines, pair.key as Node, this.path === '' ? key : `${this.path}.${key}`, this.#line)
        throw at.error(`unknown key "${key}" (expected one of: ${allowed.join(', ')})`)
      }
    }
    return this
  }

  /** The keys of a mapping, in document order. */
  keys (): string[] {
    const node = this.#node
    if (node === null) return []
    if (!isMap(node)) throw this.error('must be a mapping of keys to values')
    return node.items.map((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)))
  }

  /** The items of a sequence. */
  items (): YamlCursor[] {
    const node = this.#node
    if (node === null) return []
    if (!isSeq(node)) throw this.error('must be a list')
    return node.items.map((n, i) => new YamlCursor(this.#file, this.#lines, n as Node, `${this.path}[${i}]`, this.#line))
  }

  /** The plain value of a scalar (string, number, boolean), or undefined if absent. */
  scalar (): string | number | boolean | undefined {
    const node = this.#node
    if (node === null || !this.present) return undefined
    if (!isScalar(node)) throw this.error('must be a single value, not a list or mapping')
    const v = node.value
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v
    throw this.error(`unsupported value ${JSON.stringify(v)}`)
  }

  string (fallback?: string): string {
    const v = this.scalar()
    if (v === undefined) {
      if (fallback !== undefined) return fallback
      throw this.error('is required')
    }
    if (typeof v !== 'string' || v === '') throw this.error(`must be a non-empty text, got ${JSON.stringify(v)}`)
    return v
  }

  optionalString (): string | undefined {
    return this.present ? this.string() : undefined
  }

  /** Runs `parse` on the scalar and rethrows its ConfigError with this cursor's place. */
  parsed<T> (parse: (value: string | number | boolean) => T, fallback?: T): T {
    const v = this.scalar()
    if (v === undefined) {
      if (fallback !== undefined) return fallback
      throw this.error('is required')
    }
    try {
      return parse(v)
    } catch (err) {
      // parseDuration and friends prefix their message with the option's name; the path says it already
      throw this.error((err as Error).message.replace(/^[A-Za-z]+: /, ''))
    }
  }
}

/** Parses YAML text into a root cursor; syntax errors name the line. */
export function readYaml (file: string, text: string): YamlCursor {
  const lines = new LineCounter()
  const doc: Document = parseDocument(text, { lineCounter: lines, prettyErrors: false })
  const first = doc.errors[0]
  if (first !== undefined) {
    const line = lines.linePos(first.pos[0]).line
    throw new ConfigError(`${file}:${line}: not valid YAML: ${first.message.split('\n')[0] ?? ''}`)
  }
  const root = doc.contents
  const cursor = new YamlCursor(file, lines, root, '', 1)
  if (!cursor.present) throw cursor.error('the file is empty')
  return cursor
}
