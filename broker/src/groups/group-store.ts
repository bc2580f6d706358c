/**
 * Where a broker keeps its consumer groups' segment marks ([GROUP-STORE-1]): the event store's own
 * file (SQLite) or memory. Writes join the event store's next group commit, so they share its fsync;
 * the promise resolves once that commit is durable.
 */

/** One segment's durable marks. */
export interface SegmentRow {
  readonly segment: number
  /** Every event of the segment up to this position is handled. */
  readonly done: number
  /** The handler of the event at this position (>= done) may have run. */
  readonly started: number
  /** The last claim's epoch. */
  readonly epoch: number
}

/** A group as stored: its identity, and one row per segment (rows never written are absent). */
export interface GroupRecord {
  readonly user: string
  readonly group: string
  readonly event: string
  /** The service filter, sorted; null for all services. */
  readonly services: readonly string[] | null
  readonly segments: number
  /** ms since the epoch when a member last left or a lease last ran out (or the group was made). */
  readonly lastUsed: number
  readonly rows: readonly SegmentRow[]
}

/** A write of one group: its identity (upserted) and some of its rows, in the shape of a record. */
export type GroupWrite = GroupRecord

export interface GroupStore {
  /** The stored group, or null. */
  loadGroup (user: string, group: string): GroupRecord | null
  /** The names of a user's stored groups with when each was last used. */
  listGroups (user: string): Array<{ readonly group: string, readonly lastUsed: number }>
  /** Writes in the next commit; resolves once durable. */
  writeGroup (write: GroupWrite): Promise<void>
  /** Deletes a group and its rows in the next commit. */
  deleteGroup (user: string, group: string): Promise<void>
}

/** Groups in memory, for the memory event store: same contract, nothing survives a restart. */
export class MemoryGroupStore implements GroupStore {
  private readonly groups = new Map<string, { record: Omit<GroupRecord, 'rows'>, rows: Map<number, SegmentRow> }>()

  loadGroup (user: string, group: string): GroupRecord | null {
    const g = this.groups.get(`${user}\u0000${group}`)
    if (g === undefined) return null
    return { ...g.record, rows: [...g.rows.values()] }
  }

  listGroups (user: string): Array<{ group: string, lastUsed: number }> {
    const out: Array<{ group: string, lastUsed: number }> = []
    for (const g of this.groups.values()) if (g.record.user === user) out.push({ group: g.record.group, lastUsed: g.record.lastUsed })
    return out
  }

  async writeGroup (w: GroupWrite): Promise<void> {
    const key = `${w.user}\u0000${w.group}`
    let g = this.groups.get(key)
    const { rows, ...record } = w
    if (g === undefined) this.groups.set(key, g = { record, rows: new Map() })
    else g.record = record
    for (const r of rows) g.rows.set(r.segment, r)
  }

  async deleteGroup (user: string, group: string): Promise<void> {
    this.groups.delete(`${user}\u0000${group}`)
  }
}
