/** An injectable clock: libraries never call Date.now() directly, so tests can move time. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now (): number
}

/** The system clock. */
export const systemClock: Clock = { now: () => Date.now() }

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  constructor (private t = 1_700_000_000_000) {}
  now (): number { return this.t }
  advance (ms: number): void { this.t += ms }
  set (t: number): void { this.t = t }
}
