/// <reference path="./interfaces/sluice-handler-log.d.ts" />
/// <reference path="./interfaces/sluice-handler-outbox.d.ts" />
/// <reference path="./interfaces/sluice-handler-state.d.ts" />
/// <reference path="./interfaces/sluice-handler-types.d.ts" />
declare module 'sluice:handler/handler@0.1.0' {
  export type Event = import('sluice:handler/types@0.1.0').Event;
  export type HandlerError = import('sluice:handler/types@0.1.0').HandlerError;
  export type * as SluiceHandlerLog010 from 'sluice:handler/log@0.1.0'; // import sluice:handler/log@0.1.0
  export type * as SluiceHandlerOutbox010 from 'sluice:handler/outbox@0.1.0'; // import sluice:handler/outbox@0.1.0
  export type * as SluiceHandlerState010 from 'sluice:handler/state@0.1.0'; // import sluice:handler/state@0.1.0
  export type * as SluiceHandlerTypes010 from 'sluice:handler/types@0.1.0'; // import sluice:handler/types@0.1.0
  /**
  * Handles one event. Returning `ok` commits every emit and state write
  * of this call together with the processed record; returning an error
  * (or trapping, or running past the timeout) discards them all.
  */
  export function handle(event: Event): void;
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
