/**
 * Recording what a device writes to its line, and playing it back: same bytes, same timing. The
 * file format (JSON Lines, one header then one line per write) is in docs/firmware-sim.md.
 */
import { closeSync, openSync, readFileSync, statSync, writeSync } from 'node:fs'
import { RecordingError } from './errors.js'

export const RECORDING_FORMAT = 'herald-sim-recording'
export const RECORDING_VERSION = 1
/** Bytes a recording file may have at most, written or read. */
export const MAX_RECORDING_BYTES = 256 * 1024 * 1024

/** Who was recorded: the first line of a recording file. */
export interface RecordingHeader {
  readonly format: typeof RECORDING_FORMAT
  readonly version: typeof RECORDING_VERSION
  readonly model: string
  readonly serial: string
  readonly fw: string
  /** The run seed, if the recording came from a simulated device. */
  readonly seed?: number | undefined
  /** When the recording started (ISO 8601), for people. */
  readonly started?: string | undefined
}

/** One write: `t` ms after the device started (3 decimals at most), the bytes as written. */
export interface RecordedWrite { readonly t: number, readonly bytes: Buffer }

export interface Recording { readonly header: RecordingHeader, readonly writes: readonly RecordedWrite[] }

function headerLine (header: RecordingHeader): string {
  return JSON.stringify(header) + '\n'
}

// bytes as a latin1 string: every byte one character, readable where the bytes are text
function writeLine (t: number, bytes: Uint8Array): string {
  return JSON.stringify({ t, bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1') }) + '\n'
}

/** Time as recorded: milliseconds rounded to 3 decimals. */
export function recordedTime (ms: number): number {
  return Math.round(ms * 1000) / 1000
}

/** The text of a recording file. */
export function formatRecording (recording: Recording): string {
  return headerLine(recording.header) + recording.writes.map((w) => writeLine(w.t, w.bytes)).join('')
}

/**
 * Parses the text of a recording file; throws a RecordingError naming the line that is wrong.
 * `formatRecording(parseRecording(text))` is `text` for every file the recorder writes.
 */
export function parseRecording (text: string, name = 'recording'): Recording {
  if (!text.endsWith('\n')) throw new RecordingError(`${name}: does not end with a newline (a cut file?)`)
  const lines = text.slice(0, -1).split('\n')
  const parse = (line: string, n: number): unknown => {
    try {
      return JSON.parse(line)
    } catch (err) {
      throw new RecordingError(`${name}:${n}: not JSON`, { cause: err })
    }
  }
  const header = parse(lines[0]!, 1) as Partial<RecordingHeader> | null
  if (header === null || typeof header !== 'object' || header.format !== RECORDING_FORMAT) {
    throw new RecordingError(`${name}:1: not a ${RECORDING_FORMAT} header`)
  }
  if (header.version !== RECORDING_VERSION) throw new RecordingError(`${name}:1: version ${String(header.version)}, this simulator reads version ${RECORDING_VERSION}`)
  for (const key of ['model', 'serial', 'fw'] as const) {
    if (typeof header[key] !== 'string' || header[key] === '') throw new RecordingError(`${name}:1: header.${key} is missing`)
  }
  const writes: RecordedWrite[] = []
  let last = 0
  for (let i = 1; i < lines.length; i++) {
    const w = parse(lines[i]!, i + 1) as { t?: unknown, bytes?: unknown } | null
    if (w === null || typeof w !== 'object' || typeof w.t !== 'number' || typeof w.bytes !== 'string') {
      throw new RecordingError(`${name}:${i + 1}: a write is {"t": <ms>, "bytes": <string>}`)
    }
    if (!(Number.isFinite(w.t) && w.t >= last)) throw new RecordingError(`${name}:${i + 1}: t must be a number not below the previous one (${last}), not ${w.t}`)
    // eslint-disable-next-line no-control-regex
    if (/[^\u0000-\u00ff]/.test(w.bytes)) throw new RecordingError(`${name}:${i + 1}: bytes must be latin1 (characters up to U+00FF)`)
    last = w.t
    writes.push({ t: w.t, bytes: Buffer.from(w.bytes, 'latin1') })
  }
  return { header: header as RecordingHeader, writes }
}

/** Reads a recording file (at most {@link MAX_RECORDING_BYTES}). */
export function readRecording (file: string): Recording {
  let size: number
  try {
    size = statSync(file).size
  } catch (err) {
    throw new RecordingError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err })
  }
  if (size > MAX_RECORDING_BYTES) throw new RecordingError(`${file}: ${size} bytes, more than ${MAX_RECORDING_BYTES}`)
  return parseRecording(readFileSync(file, 'utf8'), file)
}

/**
 * Writes a recording as it happens: the header at once, then one line per write, each written to
 * the file before write() returns (no buffer to lose or to grow). Stops recording, and says so in
 * {@link full}, at {@link MAX_RECORDING_BYTES}.
 */
export class RecordingWriter {
  private fd: number | null
  private size = 0
  private stopped = false

  constructor (readonly file: string, header: RecordingHeader, private readonly maxBytes = MAX_RECORDING_BYTES) {
    this.fd = openSync(file, 'w')
    this.append(headerLine(header))
  }

  /** True once the file reached its limit: later writes were not recorded. */
  get full (): boolean {
    return this.stopped
  }

  write (timeMs: number, bytes: Uint8Array): void {
    this.append(writeLine(recordedTime(timeMs), bytes))
  }

  close (): void {
    if (this.fd !== null) closeSync(this.fd)
    this.fd = null
  }

  private append (line: string): void {
    if (this.fd === null || this.stopped) return
    const buf = Buffer.from(line, 'utf8')
    if (this.size + buf.length > this.maxBytes) {
      this.stopped = true
      return
    }
    writeSync(this.fd, buf)
    this.size += buf.length
  }
}
