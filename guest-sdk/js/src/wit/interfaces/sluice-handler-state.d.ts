declare module 'sluice:handler/state@0.1.0' {
  /**
   * Reads a field. `none` when it was never set or was deleted.
   */
  export function get(name: string): Uint8Array | undefined;
  /**
   * Writes a field, replacing any previous value.
   */
  export function set(name: string, value: Uint8Array): void;
  /**
   * Deletes a field. Deleting a missing field is not an error.
   */
  export { _delete as delete };
  function _delete(name: string): void;
  /**
   * Lists the names of the fields that are set, sorted.
   */
  export function keys(): Array<string>;
  /**
   * Why a state call failed.
   */
  export type StateError = StateErrorNoKey | StateErrorTooLarge;
  /**
   * The current event has no key, so there is no state scope.
   */
  export interface StateErrorNoKey {
    tag: 'no-key',
  }
  /**
   * The write would exceed the handler's state limits (value size or
   * total size per key). The message gives the limit.
   */
  export interface StateErrorTooLarge {
    tag: 'too-large',
    val: string,
  }
}
