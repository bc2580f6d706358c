/** The device models the simulator knows, by name. */
import { door } from './door.js'
import type { DeviceModel } from './model.js'
import { pump } from './pump.js'
import { thermostat } from './thermostat.js'

export type { DeviceModel, ModelDoc, ModelEvent, ModelInstance } from './model.js'
export { thermostat } from './thermostat.js'
export { door } from './door.js'
export { pump } from './pump.js'

/** Every built-in model, by name. */
export const MODELS: Readonly<Record<string, DeviceModel>> = Object.freeze({ thermostat, door, pump })

/** The model called `name`, or undefined. */
export function findModel (name: string): DeviceModel | undefined {
  return Object.hasOwn(MODELS, name) ? MODELS[name] : undefined
}
