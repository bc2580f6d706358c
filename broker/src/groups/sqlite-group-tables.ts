/**
 * The consumer groups' tables in the SQLite event store's file ([GROUP-STORE-1]). Created IF NOT
 * EXISTS when the store opens, without a schema version of their own: an older broker ignores them.
 * Writes are applied inside the event store's flush transaction, so they share its commit and fsync.
 */
import type Database from 'better-sqlite3'
import type { GroupRecord, GroupWrite } from './group-store.js'

/** A queued change: a write or a deletion of one group. */
export type GroupChange = { readonly write: GroupWrite } | { readonly delete: { readonly user: string, readonly group: string } }

export class SqliteGroupTables {
  private readonly putGroup: Database.Statement
  private readonly putRow: Database.Statement
  private readonly delGroup: Database.Statement
  private readonly delRows: Database.Statement
  private readonly getGroup: Database.Statement
  private readonly getRows: Database.Statement
  private readonly list: Database.Statement

  constructor (db: Database.Database) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS consumer_groups (
        user TEXT NOT NULL, name TEXT NOT NULL, event TEXT NOT NULL, services TEXT,
        segments INTEGER NOT NULL, last_used INTEGER NOT NULL,
        PRIMARY KEY (user, name)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS group_segments (
        user TEXT NOT NULL, name TEXT NOT NULL, segment INTEGER NOT NULL,
        done INTEGER NOT NULL, started INTEGER NOT NULL, epoch INTEGER NOT NULL,
        PRIMARY KEY (user, name, segment)) WITHOUT ROWID;
    `)
    this.putGroup = db.prepare(`INSERT INTO consumer_groups (user, name, event, services, segments, last_used) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (user, name) DO UPDATE SET event = excluded.event, services = excluded.services, segments = excluded.segments, last_used = excluded.last_used`)
    this.putRow = db.prepare(`INSERT INTO group_segments (user, name, segment, done, started, epoch) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (user, name, segment) DO UPDATE SET done = excluded.done, started = excluded.started, epoch = excluded.epoch`)
    this.delGroup = db.prepare('DELETE FROM consumer_groups WHERE user = ? AND name = ?')
    this.delRows = db.prepare('DELETE FROM group_segments WHERE user = ? AND name = ?')
    this.getGroup = db.prepare('SELECT event, services, segments, last_used FROM consumer_groups WHERE user = ? AND name = ?').raw(true)
    this.getRows = db.prepare('SELECT segment, done, started, epoch FROM group_segments WHERE user = ? AND name = ? ORDER BY segment').raw(true)
    this.list = db.prepare('SELECT name, last_used FROM consumer_groups WHERE user = ?').raw(true)
  }

  load (user: string, group: string): GroupRecord | null {
    const g = this.getGroup.get(user, group) as [string, string | null, number, number] | undefined
    if (g === undefined) return null
    const rows = (this.getRows.all(user, group) as Array<[number, number, number, number]>).map(([segment, done, started, epoch]) => ({ segment, done, started, epoch }))
    return { user, group, event: g[0], services: g[1] === null ? null : JSON.parse(g[1]) as string[], segments: g[2], lastUsed: g[3], rows }
  }

  listOf (user: string): Array<{ group: string, lastUsed: number }> {
    return (this.list.all(user) as Array<[string, number]>).map(([group, lastUsed]) => ({ group, lastUsed }))
  }

  /** Runs inside the flush transaction. */
  apply (changes: readonly GroupChange[]): void {
    for (const c of changes) {
      if ('delete' in c) {
        this.delRows.run(c.delete.user, c.delete.group)
        this.delGroup.run(c.delete.user, c.delete.group)
        continue
      }
      const w = c.write
      this.putGroup.run(w.user, w.group, w.event, w.services === null ? null : JSON.stringify(w.services), w.segments, w.lastUsed)
      for (const r of w.rows) this.putRow.run(w.user, w.group, r.segment, r.done, r.started, r.epoch)
    }
  }
}
