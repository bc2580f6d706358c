import { describe, expect, it } from 'vitest'
import { ManualClock, PayloadKind, type Clock, type RaisedEvent } from '@herald/protocol'
import { EPOCH_TOLERANCE_MS, MAX_EPOCHS, UploadAge } from './upload-age.js'

const HOUR = 3_600_000

function ev (seq: number, raisedAt: number): RaisedEvent {
  return { seq, name: 'e', category: 'queueing', raisedAt, isNull: false, recipient: null, payloadKind: PayloadKind.json, payload: Buffer.from('1') }
}

/** Raises events `from`..`to` at the clock's current wall time, as the endpoint does. */
function raise (ages: UploadAge, clock: Clock, from: number, to = from): RaisedEvent[] {
  const now = clock.now()
  ages.raised(from, now)
  const out: RaisedEvent[] = []
  for (let s = from; s <= to; s++) out.push(ev(s, now))
  return out
}

describe('UploadAge [SVC-AGE-1]', () => {
  it('measures an event raised in this process on the monotonic clock: setting the wall clock changes nothing', () => {
    const clock = new ManualClock()
    const ages = new UploadAge(clock, 0)
    const [a] = raise(ages, clock, 1)
    clock.advance(1500)
    expect(ages.ageOf(a!)).toBe(1500)
    clock.set(clock.now() + 5 * HOUR) // someone sets the system time forward
    expect(ages.ageOf(a!)).toBe(1500)
    const [b] = raise(ages, clock, 2) // raised after the jump: a new epoch
    clock.advance(250)
    clock.set(clock.now() - 9 * HOUR) // and back, past where it was
    expect(ages.ageOf(a!)).toBe(1750)
    expect(ages.ageOf(b!)).toBe(250)
    expect(ages.epochs).toBe(2)
  })

  it('drift within the tolerance starts no new epoch; the events of one epoch share it', () => {
    const clock = new ManualClock()
    const ages = new UploadAge(clock, 0)
    const first = raise(ages, clock, 1, 3)
    clock.advance(10)
    clock.set(clock.now() + EPOCH_TOLERANCE_MS) // a small step: drift
    raise(ages, clock, 4, 6)
    expect(ages.epochs).toBe(1)
    clock.advance(1000)
    expect(first.map((e) => ages.ageOf(e))).toEqual([1010, 1010, 1010])
  })

  it('an event raised before this process (read back from SQLite) is measured on the wall clock, never below 0', () => {
    const clock = new ManualClock()
    const ages = new UploadAge(clock, 10)
    expect(ages.ageOf(ev(7, clock.now() - 42_000))).toBe(42_000)
    expect(ages.ageOf(ev(8, clock.now() + 42_000))).toBe(0) // the wall clock went back while it was down
  })

  it('a clock without monotonic() gives plain wall-clock ages: a constant skew cancels out', () => {
    const skewed: Clock = { now: () => t + 7 * HOUR, setTimer: () => ({ cancel: () => {} }), defer: () => {} }
    let t = 1_700_000_000_000
    const ages = new UploadAge(skewed, 0)
    const [a] = raise(ages, skewed, 1)
    t += 2000
    expect(ages.ageOf(a!)).toBe(2000)
  })

  it('forgets epochs whose events were all acknowledged, and keeps the newest', () => {
    const clock = new ManualClock()
    const ages = new UploadAge(clock, 0)
    raise(ages, clock, 1, 2)
    clock.set(clock.now() + HOUR)
    const later = raise(ages, clock, 3, 4)
    clock.set(clock.now() + HOUR)
    const newest = raise(ages, clock, 5)
    expect(ages.epochs).toBe(3)
    ages.forget(1)
    expect(ages.epochs).toBe(3)
    ages.forget(2)
    expect(ages.epochs).toBe(2)
    clock.advance(300)
    expect(ages.ageOf(later[1]!)).toBe(300)
    ages.forget(5)
    expect(ages.epochs).toBe(1)
    expect(ages.ageOf(newest[0]!)).toBe(300)
  })

  it(`keeps at most ${MAX_EPOCHS} epochs; the dropped ones fall back to the wall clock`, () => {
    const clock = new ManualClock()
    const ages = new UploadAge(clock, 0)
    const events: RaisedEvent[] = []
    for (let s = 1; s <= MAX_EPOCHS + 1; s++) {
      events.push(...raise(ages, clock, s))
      clock.set(clock.now() + HOUR)
    }
    expect(ages.epochs).toBe(MAX_EPOCHS)
    // seq 1 lost its epoch: wall clock, so its age includes every jump
    expect(ages.ageOf(events[0]!)).toBe((MAX_EPOCHS + 1) * HOUR)
    expect(ages.ageOf(events[1]!)).toBe(0)
  })
})
