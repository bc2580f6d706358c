/** The SQLite `synchronous` settings Herald's stores accept (the stores live in broker and service-endpoint). */
export const SqliteSynchronous = {
  /** fsync on every commit that stores events: what resolved survives a power loss. The default. */
  FULL: 'FULL',
  /**
   * No fsync per commit in WAL mode: survives a crash of the process, but the last commits may be lost
   * on a power loss or OS crash. Breaks [STORE-ACK-1] and [SVC-PERSIST-3]; for tests and benchmarks only.
   */
  NORMAL: 'NORMAL'
} as const
export type SqliteSynchronous = (typeof SqliteSynchronous)[keyof typeof SqliteSynchronous]
