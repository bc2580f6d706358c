/** The claim rules of a consumer group alone ([GROUP-ASSIGN-1], [GROUP-LEASE-1], [GROUP-MOVE-1], [GROUP-ACK-2]), on a ManualClock. */
import { describe, it, expect } from 'vitest'
import { ManualClock } from '@herald/protocol'
import { Group, GroupMember } from './group.js'
import type { SegmentRow } from './group-store.js'

function setup (segments: number, rows: SegmentRow[] = [], timings = { leaseMs: 1000, revokeTimeoutMs: 5000 }) {
  const clock = new ManualClock()
  const log: string[] = []
  const persisted: SegmentRow[] = []
  const committed: Array<{ key: string, row: SegmentRow }> = []
  let idle = 0
  const group = new Group(segments, rows, 0, clock, timings, {
    assigned: (m, claims) => { log.push(`assigned ${m.key} ${claims.map((c) => `${c.segment}@${c.epoch}`).join(',')}`) },
    revoked: (m, segs) => { log.push(`revoked ${m.key} ${segs.join(',')}`) },
    pump: () => {},
    persist: async (r) => { persisted.push(...r) },
    committed: (m, row) => { committed.push({ key: m.key, row }) },
    idle: () => { idle++ }
  })
  return { clock, log, persisted, committed, group, idle: () => idle }
}

const owned = (g: Group, m: GroupMember): number[] => g.segs.filter((s) => s.owner === m).map((s) => s.segment)
/** Marks events as sent to a segment's owner, as the broker's read does. */
function send (g: Group, segment: number, ...positions: number[]): void {
  const s = g.segs[segment]!
  for (const p of positions) { s.sent.push(p); s.cursor = p }
}

describe('consumer group claims', () => {
  it('spreads the segments round robin over the live members, each within one of the others [GROUP-ASSIGN-1]', () => {
    const { group } = setup(16)
    const ms = ['a', 'b', 'c'].map((k, i) => new GroupMember(`u/${k}`, i + 1, 8))
    for (const m of ms) group.join(m)
    const loads = ms.map((m) => owned(group, m).length)
    expect(loads.reduce((x, y) => x + y)).toBe(16)
    expect(Math.max(...loads) - Math.min(...loads)).toBeLessThanOrEqual(1)
    // every segment has one owner, under a claim epoch of at least 1
    expect(group.segs.every((s) => s.owner !== null && s.epoch >= 1)).toBe(true)
  })

  it('keeps a closed member\'s segments for its lease and gives them back, with new epochs, when it comes back [GROUP-LEASE-1]', () => {
    const { group, clock } = setup(4)
    const a = new GroupMember('u/a', 1, 8)
    const b = new GroupMember('u/b', 1, 8)
    group.join(a)
    group.join(b)
    const mine = owned(group, b)
    const epochs = mine.map((n) => group.segs[n]!.epoch)
    group.leave(b, false)
    clock.advance(999)
    expect(owned(group, a)).toHaveLength(2) // still leased to b
    const b2 = new GroupMember('u/b', 7, 8)
    group.join(b2)
    expect(owned(group, b2)).toEqual(mine)
    expect(mine.map((n) => group.segs[n]!.epoch)).toEqual(epochs.map((e) => e + 1))
  })

  it('gives a dead member\'s segments to the live members once its lease ran out [GROUP-LEASE-1]', () => {
    const { group, clock } = setup(4)
    const a = new GroupMember('u/a', 1, 8)
    const b = new GroupMember('u/b', 1, 8)
    group.join(a)
    group.join(b)
    group.leave(b, false)
    clock.advance(999)
    expect(owned(group, a)).toHaveLength(2)
    clock.advance(1)
    expect(owned(group, a)).toHaveLength(4)
  })

  it('frees a leaving member\'s segments at once [GROUP-LEAVE-1], and says when nothing holds the group [GROUP-FORGET-1]', () => {
    const t = setup(4)
    const a = new GroupMember('u/a', 1, 8)
    const b = new GroupMember('u/b', 1, 8)
    t.group.join(a)
    t.group.join(b)
    t.group.leave(b, true)
    expect(owned(t.group, a)).toHaveLength(4)
    t.group.leave(a, false)
    expect(t.idle()).toBe(0) // a's lease runs
    t.clock.advance(1000)
    expect(t.idle()).toBe(1)
  })

  it('refuses the acks of an old epoch or another member, and acks beyond what was sent [GROUP-ACK-2]', () => {
    const { group } = setup(1)
    const a = new GroupMember('u/a', 1, 8)
    group.join(a)
    const s = group.segs[0]!
    send(group, 0, 5, 9)
    expect(group.ack(a, 0, s.epoch - 1, 5, 9)).toBe('fenced')
    expect(group.ack(new GroupMember('u/x', 1, 8), 0, s.epoch, 5, 9)).toBe('fenced')
    expect(group.ack(a, 0, s.epoch, 5, 10)).toBe('beyond')
    expect([s.done, s.started]).toEqual([0, 0])
    expect(group.fenced).toBe(2)
    expect(group.ack(a, 0, s.epoch, 5, 9)).toBe('ok')
    expect([s.done, s.started, s.sent]).toEqual([5, 9, [9]])
  })

  it('writes the marks and tells the member once they are durable [GROUP-CTRL-4]', async () => {
    const { group, committed, persisted } = setup(1)
    const a = new GroupMember('u/a', 1, 8)
    group.join(a)
    send(group, 0, 3)
    group.ack(a, 0, 1, 0, 3)
    expect(committed).toEqual([])
    await Promise.resolve()
    await Promise.resolve()
    expect(committed).toEqual([{ key: 'u/a', row: { segment: 0, done: 0, started: 3, epoch: 1 } }])
    expect(persisted.at(-1)).toEqual({ segment: 0, done: 0, started: 3, epoch: 1 })
  })

  it('delivers a new claim from the done position and flags the started event [GROUP-REDELIVER-1]', () => {
    const { group, clock } = setup(1, [{ segment: 0, done: 10, started: 12, epoch: 4 }])
    const a = new GroupMember('u/a', 1, 8)
    group.join(a)
    const s = group.segs[0]!
    expect([s.cursor, s.redeliver, s.epoch]).toEqual([10, 12, 5])
    send(group, 0, 12, 13)
    group.ack(a, 0, 5, 12, 13)
    group.leave(a, false)
    clock.advance(1000)
    const b = new GroupMember('u/b', 1, 8)
    group.join(b)
    expect([s.cursor, s.redeliver, s.epoch]).toEqual([12, 13, 6])
    // done and started equal: nothing flagged
    send(group, 0, 13)
    group.ack(b, 0, 6, 13, 13)
    group.leave(b, true)
    group.join(a)
    expect(s.redeliver).toBe(0)
  })

  it('moves a segment to a joining member only once its owner has done what it was sent [GROUP-MOVE-1]', () => {
    const { group, log } = setup(2)
    const a = new GroupMember('u/a', 1, 8)
    group.join(a)
    send(group, 0, 1, 2)
    send(group, 1, 3)
    const b = new GroupMember('u/b', 1, 8)
    log.length = 0
    group.join(b)
    expect(owned(group, b)).toEqual([]) // both segments have events in flight at a
    expect(log).toEqual([])
    const moving = group.segs.find((s) => s.revokeTo === b)!
    expect(moving.credit()).toBe(0) // nothing more is sent to a for it
    const last = moving.sent.at(-1)!
    group.ack(a, moving.segment, moving.epoch, last, last)
    expect(log).toEqual([`revoked u/a ${moving.segment}`, `assigned u/b ${moving.segment}@2`])
    expect(owned(group, b)).toEqual([moving.segment])
    // a's late ack for the moved segment is fenced
    expect(group.ack(a, moving.segment, 1, last, last)).toBe('fenced')
  })

  it('moves it anyway after revokeTimeoutMs; the event the owner had started is then flagged for the new one [GROUP-MOVE-1]', () => {
    const { group, clock } = setup(2)
    const a = new GroupMember('u/a', 1, 8)
    group.join(a)
    send(group, 0, 1)
    send(group, 1, 2)
    group.ack(a, 0, 1, 0, 1)
    group.ack(a, 1, 1, 0, 2)
    const b = new GroupMember('u/b', 1, 8)
    group.join(b)
    clock.advance(4999)
    expect(owned(group, b)).toEqual([])
    clock.advance(1)
    const [n] = owned(group, b)
    const s = group.segs[n!]!
    expect(s.redeliver).toBe(s.started)
    expect(s.cursor).toBe(0)
  })
})
