/**
 * Dead letters in SQLite ([CLI-DEAD-2]): the table `<positions table>_dead` in the positions' own
 * database (the positions file, or the application's database in transactional mode), written in one
 * transaction with the position that moves past the event. The table is created when the store opens
 * (CREATE TABLE IF NOT EXISTS: a file from before it simply gets it; an older Herald ignores it).
 */
import { existsSync } from 'node:fs'
import Database from 'better-sqlite3'
import { ConfigError, PersistenceError, eventId, type Category, type PayloadKind, type StoredEvent } from '@herald/protocol'
import { checkMaxDeadLetters, deadLettersFull, type DeadLetter, type DeadLetterStore, type NewDeadLetter } from './dead-letter-store.js'

/**
 * The schema of a SqlitePositionStore's tables ([CLI-DEAD-8]), recorded in `<table>_schema`: 1
 * positions and boot id (also the files from before the record); 2 dead letters in `<table>_dead`;
 * 3 the `done` column of the positions table ([CLI-CONC-3]).
 */
export const POSITIONS_SCHEMA_VERSION = 3

interface Row {
  id: number, key: string, attempts: number, last_error: string, dead_at: number, age: number, retry: number,
  position: number, service: string, instance: string, seq: number, name: string, category: string,
  raised_at: number, received_at: number, upload_age: number, expires_at: number | null, is_null: number,
  recipient: string | null, payload_kind: number, payload: Buffer
}

function toLetter (r: Row): DeadLetter {
  const event: StoredEvent = {
    position: r.position,
    serviceId: r.service,
    instance: r.instance,
    seq: r.seq,
    name: r.name,
    category: r.category as Category,
    raisedAt: r.raised_at,
    receivedAt: r.received_at,
    uploadAge: r.upload_age,
    expiresAt: r.expires_at,
    isNull: r.is_null !== 0,
    recipient: r.recipient,
    payloadKind: r.payload_kind as PayloadKind,
    payload: new Uint8Array(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength)
  }
  return { id: r.id, key: r.key, event, eventId: eventId(r.instance, r.seq), attempts: r.attempts, lastError: r.last_error, deadAt: r.dead_at, age: r.age, retry: r.retry !== 0 }
}

export class SqliteDeadLetters implements DeadLetterStore {
  readonly maxDeadLetters: number
  private readonly insert: Database.Statement
  private readonly count: Database.Statement<[], number>
  private readonly listAll: Database.Statement<[], Row>
  private readonly listKey: Database.Statement<[string], Row>
  private readonly getOne: Database.Statement<[number], Row>
  private readonly markRetry: Database.Statement<[number]>
  private readonly remove: Database.Statement<[number]>
  private readonly markFailed: Database.Statement<[string, number, number, number]>
  private readonly addTx: (letter: NewDeadLetter, position: number, started: number | null, done: readonly number[] | undefined) => number

  /**
   * `writePosition` is the position store's own write; it runs inside the same transaction (a
   * savepoint when the application's transaction is open).
   */
  constructor (private readonly db: Database.Database, table: string, maxDeadLetters: number | undefined, writePosition: (key: string, position: number, started: number | null, done?: readonly number[]) => void) {
    this.maxDeadLetters = checkMaxDeadLetters('SqlitePositionStore', maxDeadLetters)
    const t = `${table}_dead`
    db.exec(`CREATE TABLE IF NOT EXISTS ${t} (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT NOT NULL, dead_at INTEGER NOT NULL, age INTEGER NOT NULL, retry INTEGER NOT NULL DEFAULT 0,
      position INTEGER NOT NULL, service TEXT NOT NULL, instance TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, category TEXT NOT NULL, raised_at INTEGER NOT NULL, received_at INTEGER NOT NULL,
      upload_age INTEGER NOT NULL, expires_at INTEGER, is_null INTEGER NOT NULL, recipient TEXT, payload_kind INTEGER NOT NULL, payload BLOB NOT NULL)`)
    this.insert = db.prepare(`INSERT INTO ${t} (key, attempts, last_error, dead_at, age, position, service, instance, seq, name, category, raised_at, received_at, upload_age, expires_at, is_null, recipient, payload_kind, payload)
      VALUES (@key, @attempts, @lastError, @deadAt, @age, @position, @service, @instance, @seq, @name, @category, @raisedAt, @receivedAt, @uploadAge, @expiresAt, @isNull, @recipient, @payloadKind, @payload)`)
    this.count = db.prepare(`SELECT count(*) FROM ${t}`).pluck() as Database.Statement<[], number>
    this.listAll = db.prepare(`SELECT * FROM ${t} ORDER BY id`)
    this.listKey = db.prepare(`SELECT * FROM ${t} WHERE key = ? ORDER BY id`)
    this.getOne = db.prepare(`SELECT * FROM ${t} WHERE id = ?`)
    this.markRetry = db.prepare(`UPDATE ${t} SET retry = 1 WHERE id = ?`)
    this.remove = db.prepare(`DELETE FROM ${t} WHERE id = ?`)
    this.markFailed = db.prepare(`UPDATE ${t} SET retry = 0, attempts = attempts + 1, last_error = ?, age = age + max(0, ? - dead_at), dead_at = ? WHERE id = ?`)
    this.addTx = db.transaction((letter: NewDeadLetter, position: number, started: number | null, done: readonly number[] | undefined): number => {
      if (this.count.get() as number >= this.maxDeadLetters) throw deadLettersFull(this.maxDeadLetters, letter)
      const e = letter.event
      const r = this.insert.run({
        key: letter.key, attempts: letter.attempts, lastError: letter.lastError.slice(0, 4000), deadAt: letter.deadAt, age: Math.max(0, Math.round(letter.age)),
        position: e.position, service: e.serviceId, instance: e.instance, seq: e.seq, name: e.name, category: e.category,
        raisedAt: e.raisedAt, receivedAt: e.receivedAt, uploadAge: e.uploadAge, expiresAt: e.expiresAt, isNull: e.isNull ? 1 : 0,
        recipient: e.recipient, payloadKind: e.payloadKind, payload: Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength)
      })
      writePosition(letter.key, position, started, done)
      return Number(r.lastInsertRowid)
    })
  }

  add (letter: NewDeadLetter, position: number, started: number | null, done?: readonly number[]): number {
    return this.addTx(letter, position, started, done)
  }

  list (key?: string): DeadLetter[] {
    return (key === undefined ? this.listAll.all() : this.listKey.all(key)).map(toLetter)
  }

  get (id: number): DeadLetter | null {
    const r = this.getOne.get(id)
    return r === undefined ? null : toLetter(r)
  }

  retry (id: number): boolean {
    return this.markRetry.run(id).changes > 0
  }

  discard (id: number): boolean {
    return this.remove.run(id).changes > 0
  }

  failed (id: number, lastError: string, at: number): void {
    this.markFailed.run(lastError.slice(0, 4000), at, at, id)
  }
}

/**
 * The dead letters of a positions file, for tools (`herald dead-letters`): opens an existing file
 * only, without touching its positions. The file is locked while its client runs (the store holds
 * SQLite's exclusive lock): then this throws a PersistenceError POSITIONS_LOCKED.
 */
export function openDeadLetters (file: string, options: { table?: string | undefined } = {}): { deadLetters: SqliteDeadLetters, close: () => void } {
  const table = options.table ?? 'herald_positions'
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(table)) throw new ConfigError(`openDeadLetters: table name ${JSON.stringify(table)} is not a plain SQL identifier`)
  if (!existsSync(file)) throw new ConfigError(`positions file ${file} does not exist`)
  let db: Database.Database | null = null
  try {
    db = new Database(file, { fileMustExist: true, timeout: 200 })
    const hasSchema = db.prepare('SELECT 1 FROM sqlite_master WHERE type = \'table\' AND name = ?').pluck().get(`${table}_schema`) !== undefined
    const version = hasSchema ? db.prepare(`SELECT version FROM ${table}_schema WHERE id = 1`).pluck().get() as number | undefined : undefined
    if (version === undefined || version < 2) throw new ConfigError(`${file} has no dead letters (a positions file of a Herald before them, or --table is not its table)`)
    if (version > POSITIONS_SCHEMA_VERSION) throw new PersistenceError(`${file} was written by a newer Herald (schema version ${version}; this one knows up to ${POSITIONS_SCHEMA_VERSION})`)
    const d = new SqliteDeadLetters(db, table, 10_000_000, () => { throw new ConfigError('openDeadLetters: a tool does not record dead letters') })
    const opened = db
    return { deadLetters: d, close: () => { opened.close() } }
  } catch (err) {
    db?.close()
    if ((err as { code?: string }).code === 'SQLITE_BUSY') throw new PersistenceError(`positions file ${file} is in use (its client endpoint is running: stop it first)`, { cause: err, code: 'POSITIONS_LOCKED' })
    if (err instanceof ConfigError) throw err
    throw new PersistenceError(`cannot open dead letters in ${file}: ${(err as Error).message}`, { cause: err })
  }
}
