/** Types of prerequisites.mjs (see there). */
export interface Prerequisite {
  readonly command: string
  readonly package: string
  readonly usedBy: string
  /** Needed by some tests only: a missing one does not stop the run (those tests fail naming it). */
  readonly optional?: boolean
}
export declare function postgresBinDirs (root?: string): string[]
export declare const PREREQUISITES: readonly Prerequisite[]
export declare function onPath (command: string, path: string | undefined): boolean
export declare function missingPrerequisites (path: string | undefined, list?: readonly Prerequisite[], extraDirs?: readonly string[]): Prerequisite[]
export declare function prerequisitesMessage (missing: readonly Prerequisite[]): string | null
export default function checkPrerequisites (): void
