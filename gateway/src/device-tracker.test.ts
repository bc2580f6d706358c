import { describe, expect, it } from 'vitest'
import { DeviceTracker } from './device-tracker.js'

const p = (boot: number, seq: number): { boot: number, seq: number } => ({ boot, seq })

describe('DeviceTracker ([DEV-GW-*])', () => {
  it('asks for a HELLO before judging frames', () => {
    const t = new DeviceTracker(p(1, 5))
    expect(t.judge(p(1, 6), undefined)).toEqual({ kind: 'needHello' })
    t.hello(1, p(1, 6))
    expect(t.judge(p(1, 6), undefined)).toEqual({ kind: 'accept', gap: 0 })
  })

  it('accepts only the successor of the mark in the same boot, and calls the rest duplicates or out of order', () => {
    const t = new DeviceTracker(p(2, 10))
    t.hello(2, p(2, 11))
    expect(t.judge(p(2, 11), undefined).kind).toBe('accept')
    expect(t.judge(p(2, 11), undefined).kind).toBe('duplicate')
    expect(t.judge(p(2, 3), undefined).kind).toBe('duplicate')
    expect(t.judge(p(2, 13), undefined).kind).toBe('outOfOrder')
    expect(t.judge(p(2, 12), undefined).kind).toBe('accept')
    expect(t.last).toEqual(p(2, 12))
    // the mark only moves when told
    expect(t.durable).toEqual(p(2, 10))
    t.committed(p(2, 12))
    expect(t.durable).toEqual(p(2, 12))
  })

  it('crosses a boot only with a seq-1 frame whose prev is the last frame handled', () => {
    const t = new DeviceTracker(p(3, 7))
    t.hello(3, p(3, 8))
    expect(t.judge(p(3, 8), undefined).kind).toBe('accept')
    // (3,9) was lost on the line: the first frame of boot 4 names it as prev, so it is not the next one
    expect(t.judge(p(4, 1), p(3, 9)).kind).toBe('outOfOrder')
    expect(t.judge(p(4, 1), undefined).kind).toBe('outOfOrder')
    expect(t.judge(p(3, 9), undefined).kind).toBe('accept')
    expect(t.judge(p(4, 1), p(3, 9))).toEqual({ kind: 'accept', gap: 0 })
    expect(t.judge(p(4, 2), undefined).kind).toBe('accept')
  })

  it('without a mark, expects exactly the oldest frame the HELLO names', () => {
    const t = new DeviceTracker(null)
    t.hello(5, p(5, 40))
    expect(t.judge(p(5, 41), undefined).kind).toBe('outOfOrder')
    expect(t.judge(p(5, 40), undefined)).toEqual({ kind: 'accept', gap: 0 })
    expect(t.judge(p(5, 41), undefined).kind).toBe('accept')
  })

  it('counts a gap when the device holds nothing between the mark and its oldest frame', () => {
    const t = new DeviceTracker(p(1, 10))
    t.hello(1, p(1, 15))
    expect(t.judge(p(1, 11), undefined).kind).toBe('outOfOrder')
    expect(t.judge(p(1, 15), undefined)).toEqual({ kind: 'accept', gap: 4 })
    // across boots the number lost is unknown: counted as 1
    const u = new DeviceTracker(p(1, 10))
    u.hello(2, p(2, 1))
    expect(u.judge(p(2, 1), p(1, 12))).toEqual({ kind: 'accept', gap: 1 })
    // ... and not counted when prev shows nothing was lost
    const v = new DeviceTracker(p(1, 10))
    v.hello(2, p(2, 1))
    expect(v.judge(p(2, 1), p(1, 10))).toEqual({ kind: 'accept', gap: 0 })
  })

  it('ignores an oldest at or before the last frame handled (frames the device has not seen acknowledged)', () => {
    const t = new DeviceTracker(p(1, 10))
    t.hello(1, p(1, 4))
    expect(t.judge(p(1, 4), undefined).kind).toBe('duplicate')
    expect(t.judge(p(1, 10), undefined).kind).toBe('duplicate')
    expect(t.judge(p(1, 11), undefined).kind).toBe('accept')
  })

  it('sets the mark aside when the boot counter goes back ([DEV-GW-3])', () => {
    const t = new DeviceTracker(p(9, 100))
    expect(t.hello(1, p(1, 1))).toEqual({ reset: true })
    expect(t.judge(p(1, 1), null)).toEqual({ kind: 'accept', gap: 0 })
    expect(t.judge(p(1, 2), undefined).kind).toBe('accept')
  })

  it('after a failed commit, forgets what was not durable and waits for a HELLO', () => {
    const t = new DeviceTracker(p(1, 1))
    t.hello(1, p(1, 2))
    t.judge(p(1, 2), undefined)
    t.judge(p(1, 3), undefined)
    t.rollback()
    expect(t.last).toEqual(p(1, 1))
    expect(t.judge(p(1, 2), undefined).kind).toBe('needHello')
    t.hello(1, p(1, 2))
    expect(t.judge(p(1, 2), undefined).kind).toBe('accept')
  })

  it('needs a new HELLO after the line closed, but keeps what it accepted', () => {
    const t = new DeviceTracker(null)
    t.hello(1, p(1, 1))
    t.judge(p(1, 1), null)
    t.lineClosed()
    expect(t.judge(p(1, 2), undefined).kind).toBe('needHello')
    t.hello(1, p(1, 1))
    expect(t.judge(p(1, 1), undefined).kind).toBe('duplicate')
    expect(t.judge(p(1, 2), undefined).kind).toBe('accept')
  })

  it('takes the first frame seen when neither a mark nor the HELLO says where to start', () => {
    const t = new DeviceTracker(null)
    t.hello(1, null)
    expect(t.judge(p(1, 7), undefined)).toEqual({ kind: 'accept', gap: 0 })
    expect(t.judge(p(1, 8), undefined).kind).toBe('accept')
  })
})
