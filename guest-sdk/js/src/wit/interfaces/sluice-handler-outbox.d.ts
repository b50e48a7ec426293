/// <reference path="./sluice-handler-types.d.ts" />
declare module 'sluice:handler/outbox@0.1.0' {
  /**
   * Buffers `event` for publication. Returns the id the host assigned to
   * it, which is stable across retries and redeliveries of the current
   * event.
   */
  export function emit(event: OutgoingEvent): string;
  export type Header = import('sluice:handler/types@0.1.0').Header;
  /**
   * An event to publish once the current event is processed.
   */
  export interface OutgoingEvent {
    /**
     * Destination topic.
     */
    topic: string,
    /**
     * Event type, e.g. `stock.reserved`.
     */
    type: string,
    /**
     * Ordering key of the new event, if any.
     */
    key?: string,
    /**
     * The payload.
     */
    data: Uint8Array,
    /**
     * Media type of `data`; `application/json` is typical.
     */
    contentType?: string,
    /**
     * Schema or version of the payload.
     */
    dataSchema?: string,
    /**
     * Extra extension attributes or headers. Names are lowercased.
     * `causationid`, `correlationid` and `traceparent` are set by the
     * host and cannot be overridden here.
     */
    headers: Array<Header>,
  }
  /**
   * Why an emit was refused. Exceeding the handler's emit limits is not
   * an error the guest sees: the host aborts the invocation with the
   * outcome `limit`, since a guest that ignores errors could otherwise
   * loop forever.
   */
  export type EmitError = EmitErrorInvalid;
  /**
   * The event is malformed: empty topic or type, or a name that is
   * not allowed. The message says which.
   */
  export interface EmitErrorInvalid {
    tag: 'invalid',
    val: string,
  }
}
