/**
 * `herald dead-letters list|show <id>|retry <id>|discard <id> --positions <file>`: the dead letters
 * of a client's SQLite positions file ([CLI-DEAD-7]): the events a subscription with `maxAttempts`
 * gave up on. `retry` marks one to be handed to the handler when its subscription next starts, before
 * new events ([CLI-DEAD-5]); `discard` deletes it. Works on a file whose client is stopped (a running
 * client holds the file's lock). Exit 0 done; 1 no such id or the file in use; 2 a usage error
 * (unknown subcommand or option, an id that is not a positive integer, no such file) [CMD-USAGE-1].
 */
import { Command, InvalidArgumentError, Option } from 'commander'
import { openDeadLetters, type DeadLetter } from '@herald/client-endpoint'
import { ConfigError, HeraldError, decodePayload } from '@herald/protocol'

interface DeadLetterOptions {
  readonly positions: string
  readonly table?: string
  readonly json?: boolean
}

function id (value: string): number {
  const n = Number(value)
  if (!/^[1-9][0-9]{0,15}$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('a dead letter id: a positive integer, as `herald dead-letters list` shows')
  return n
}

function payloadText (l: DeadLetter): string {
  if (l.event.isNull) return 'null instance'
  const p = decodePayload(l.event.payloadKind, l.event.payload)
  if (p instanceof Uint8Array) return `bytes (${p.byteLength}) ${Buffer.from(p).toString('base64')}`
  return JSON.stringify(p)
}

function toJson (l: DeadLetter, withPayload: boolean): Record<string, unknown> {
  const e = l.event
  const base: Record<string, unknown> = {
    id: l.id, key: l.key, eventId: l.eventId, event: e.name, service: e.serviceId, position: e.position,
    attempts: l.attempts, lastError: l.lastError, deadAt: new Date(l.deadAt).toISOString(), retry: l.retry
  }
  if (!withPayload) return base
  const p = e.isNull ? null : decodePayload(e.payloadKind, e.payload)
  return {
    ...base, category: e.category, raisedAt: new Date(e.raisedAt).toISOString(), receivedAt: new Date(e.receivedAt).toISOString(),
    recipient: e.recipient, isNull: e.isNull, payload: p instanceof Uint8Array ? { base64: Buffer.from(p).toString('base64') } : p
  }
}

function line (l: DeadLetter): string {
  const e = l.event
  const flag = l.retry ? ' (retry on next start)' : ''
  return `${l.id}\t${l.key}\t${l.eventId}\t${e.name}\t${e.serviceId}\t${l.attempts} attempts\t${new Date(l.deadAt).toISOString()}\t${l.lastError.replace(/\s+/g, ' ')}${flag}`
}

/** Runs one subcommand; resolves the exit code. Writes to `out`, errors to `err`. */
export function runDeadLetters (
  action: 'list' | 'show' | 'retry' | 'discard', target: number | undefined, o: DeadLetterOptions,
  out: (s: string) => void = (s) => { process.stdout.write(s) }, err: (s: string) => void = (s) => { process.stderr.write(s) }
): number {
  let opened: ReturnType<typeof openDeadLetters>
  try {
    opened = openDeadLetters(o.positions, { table: o.table })
  } catch (e) {
    const h = e as HeraldError
    err(`herald dead-letters: ${h.message}${h instanceof HeraldError ? ` [${h.code}]` : ''}\n`)
    return h instanceof ConfigError ? 2 : 1
  }
  try {
    const store = opened.deadLetters
    if (action === 'list') {
      const all = store.list()
      if (o.json === true) for (const l of all) out(JSON.stringify(toJson(l, false)) + '\n')
      else {
        out('id\tsubscription\tevent id\tevent\tservice\tattempts\twhen\tlast error\n')
        for (const l of all) out(line(l) + '\n')
        if (all.length === 0) err('herald dead-letters: no dead letters\n')
      }
      return 0
    }
    const n = target as number
    const l = store.get(n)
    if (l === null) {
      err(`herald dead-letters: no dead letter ${n} in ${o.positions}\n`)
      return 1
    }
    if (action === 'show') {
      if (o.json === true) out(JSON.stringify(toJson(l, true)) + '\n')
      else out(`${line(l)}\nposition ${l.event.position}, category ${l.event.category}, raised ${new Date(l.event.raisedAt).toISOString()}, received ${new Date(l.event.receivedAt).toISOString()}${l.event.recipient === null ? '' : `, for ${l.event.recipient}`}\npayload ${payloadText(l)}\n`)
    } else if (action === 'retry') {
      store.retry(n)
      out(`dead letter ${n} (${l.eventId}) will be handed to subscription "${l.key}" when it next starts\n`)
    } else {
      store.discard(n)
      out(`dead letter ${n} (${l.eventId}) discarded\n`)
    }
    return 0
  } finally {
    opened.close()
  }
}

function sub (name: 'list' | 'show' | 'retry' | 'discard', description: string): Command {
  const c = new Command(name).description(description)
  if (name !== 'list') c.argument('<id>', 'the dead letter id (`herald dead-letters list`)', id)
  c.addOption(new Option('--positions <file>', 'the client\'s SQLite positions file').makeOptionMandatory())
    .option('--table <name>', 'the positions table name, if not herald_positions')
  if (name === 'list' || name === 'show') c.option('--json', 'one JSON object per line')
  c.action((...args: unknown[]) => {
    const target = name === 'list' ? undefined : args[0] as number
    const opts = (name === 'list' ? args[0] : args[1]) as DeadLetterOptions
    process.exitCode = runDeadLetters(name, target, opts)
  })
  return c
}

export function deadLettersCommand (): Command {
  return new Command('dead-letters')
    .description('list, show, retry or discard the dead letters of a client\'s positions file (its client stopped)')
    .addCommand(sub('list', 'every dead letter: id, subscription, event id, event, service, attempts, when, last error'))
    .addCommand(sub('show', 'one dead letter with its payload'))
    .addCommand(sub('retry', 'hand it to its subscription\'s handler when the client next starts, before new events'))
    .addCommand(sub('discard', 'delete it'))
}
