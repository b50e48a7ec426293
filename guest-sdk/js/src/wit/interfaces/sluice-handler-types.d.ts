declare module 'sluice:handler/types@0.1.0' {
  /**
   * A name/value pair carried with an event: CloudEvents extension
   * attributes (such as `traceparent`, `causationid`, `correlationid`) and
   * any transport header the producer set. Names are lowercase.
   */
  export interface Header {
    /**
     * Attribute or header name, lowercase ASCII.
     */
    name: string,
    /**
     * Attribute or header value.
     */
    value: string,
  }
  /**
   * One event, as delivered to a handler.
   * 
   * The attributes follow CloudEvents 1.0: `id`, `source`, `type`, `time`,
   * `datacontenttype`, `dataschema`, `data` and extension attributes. The
   * delivery metadata (`topic`, `attempt`) and the ordering `key` are added
   * by the host.
   */
  export interface Event {
    /**
     * Unique id of the event within its `source` (CloudEvents `id`).
     * Together with the handler name it is the idempotency key: the host
     * never runs a handler twice to completion for the same id.
     */
    id: string,
    /**
     * Where the event comes from, as a URI reference (CloudEvents
     * `source`), e.g. `/orders` or `sluice://handler/inventory`.
     */
    source: string,
    /**
     * The kind of event, e.g. `order.placed` (CloudEvents `type`).
     */
    type: string,
    /**
     * When the occurrence happened, RFC 3339 (CloudEvents `time`).
     */
    time?: string,
    /**
     * Media type of `data`, e.g. `application/json`
     * (CloudEvents `datacontenttype`).
     */
    contentType?: string,
    /**
     * The payload, as raw bytes (CloudEvents `data`).
     */
    data: Uint8Array,
    /**
     * Schema or version of the payload (CloudEvents `dataschema`), e.g.
     * `https://example.com/schemas/order-placed/v2`. Handlers use it to
     * accept several payload versions side by side.
     */
    dataSchema?: string,
    /**
     * CloudEvents extension attributes and transport headers.
     */
    headers: Array<Header>,
    /**
     * The ordering key (the partition key). Events with the same key are
     * delivered to a handler one at a time, in log order. `none` for a
     * keyless event, which may run in parallel with anything.
     */
    key?: string,
    /**
     * The topic the event was consumed from.
     */
    topic: string,
    /**
     * Delivery attempt for this handler, starting at 1. Greater than 1
     * when an earlier attempt failed with a retryable error, a trap or a
     * timeout.
     */
    attempt: number,
  }
  /**
   * Why a handler did not process an event.
   */
  export type HandlerError = HandlerErrorRetryable | HandlerErrorFatal;
  /**
   * A transient failure (a dependency was unavailable, a lock timed
   * out, ...). The host discards every effect of this attempt and
   * retries the event later with exponential backoff, up to the
   * handler's maximum number of attempts; then it goes to the
   * dead-letter queue.
   */
  export interface HandlerErrorRetryable {
    tag: 'retryable',
    val: string,
  }
  /**
   * A permanent failure: the event can never be processed as it is
   * (malformed payload, unknown version, violated invariant). The host
   * discards every effect of this attempt and moves the event straight
   * to the dead-letter queue, where it can be inspected and redriven.
   */
  export interface HandlerErrorFatal {
    tag: 'fatal',
    val: string,
  }
}
