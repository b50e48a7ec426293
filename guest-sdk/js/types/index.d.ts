/**
 * @sluice/sdk: write Sluice event handlers in JavaScript or TypeScript.
 *
 * A handler is one function `(event, ctx) => void | Promise<void>`. It reads
 * the event, uses `ctx` to read and write the per-key state, emit follow-up
 * events and log, and either returns (the effects commit) or throws (they
 * are discarded):
 *
 * - `throw new Fatal(msg)`: the event can never succeed; dead-lettered now.
 * - `throw new Retryable(msg)`: transient; retried with backoff, then
 *   dead-lettered after the last attempt.
 * - any other exception (a bug, a TypeError, ...): treated as retryable, with
 *   the error's name, message and stack as the message (like a Rust panic,
 *   which the host also retries).
 *
 * The same function runs in the component (see `./component.js`, wired by
 * `sluice-build-js`) and natively under `node --test` with `TestHost`
 * (`@sluice/sdk/testing`).
 */
/**
 * Why a handler did not process an event. Throw one of its subclasses,
 * `Retryable` or `Fatal`; the class decides what the host does next.
 */
export declare class HandlerError extends Error {
    /** @type {'retryable' | 'fatal'} */
    kind: 'retryable' | 'fatal';
    /**
     * @param {'retryable' | 'fatal'} kind
     * @param {string} message
     * @param {{ cause?: unknown }} [options]
     */
    constructor(kind: 'retryable' | 'fatal', message: string, options?: {
        cause?: unknown;
    });
    /** Is this a retryable error? */
    get isRetryable(): boolean;
}
/**
 * A transient failure (a dependency was down, a lock timed out): the host
 * discards this attempt's effects and retries the event later with
 * exponential backoff, up to the handler's maximum number of attempts.
 */
export declare class Retryable extends HandlerError {
    /** @param {string} message @param {{ cause?: unknown }} [options] */
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/**
 * A permanent failure (a poison event: malformed payload, unknown version,
 * violated invariant): the host discards this attempt's effects and moves
 * the event straight to the dead-letter queue.
 */
export declare class Fatal extends HandlerError {
    /** @param {string} message @param {{ cause?: unknown }} [options] */
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/**
 * A state call failed: the event has no key (`reason` `no-key`) or the write
 * exceeds the handler's state limits (`too-large`). It is a `Fatal`: using
 * state on a keyless event or outgrowing the limits will not get better on
 * a retry.
 */
export declare class StateError extends Fatal {
    /** @type {'no-key' | 'too-large'} */
    reason: 'no-key' | 'too-large';
    /** @param {'no-key' | 'too-large'} reason @param {string} [detail] */
    constructor(reason: 'no-key' | 'too-large', detail?: string);
}
export type Outcome = {
    kind: 'ok';
} | {
    kind: 'retryable' | 'fatal';
    message: string;
};
/**
 * Formats an exception that is not a `HandlerError` as the message of a
 * retryable error: `Name: message` and the stack lines, so that a dead-letter
 * entry says what went wrong and where.
 * @param {unknown} e
 * @returns {string}
 */
export declare function describeException(e: unknown): string;
/**
 * Maps whatever a handler threw to the outcome the host records.
 *
 * - `Fatal` / `Retryable` (any `HandlerError`): that kind, with its message.
 * - a WIT-shaped value `{tag: 'fatal' | 'retryable', val: string}`, as jco
 *   bindings represent `handler-error`: that kind.
 * - anything else: `retryable`, with `describeException(e)`.
 * @param {unknown} e
 * @returns {Outcome}
 */
export declare function outcomeOf(e: unknown): Outcome;
/**
 * Runs `fn(event, ctx)` and maps its result (or the promise it returns) to
 * an outcome. Never throws.
 * @param {Handler} fn
 * @param {Event} event
 * @param {Ctx} ctx
 * @returns {Outcome | Promise<Outcome>}
 */
export declare function invoke(fn: Handler, event: Event, ctx: Ctx): Outcome | Promise<Outcome>;
export type Handler = (event: Event, ctx: Ctx) => void | Promise<void>;
/**
 * @typedef {(event: Event, ctx: Ctx) => void | Promise<void>} Handler
 */
/**
 * Declares a handler. It returns `fn` unchanged; it exists for the types
 * (in TypeScript, `event` and `ctx` need no annotations) and for
 * readability: `export default handler((event, ctx) => { ... })`.
 * @template {Handler} F
 * @param {F} fn
 * @returns {F}
 */
export declare function handler<F extends Handler>(fn: F): F;
/**
 * Finds the handler function in a module namespace: its default export, or
 * else its export named `handle`.
 * @param {any} mod
 * @returns {Handler}
 */
export declare function handlerOf(mod: any): Handler;
export type EventInit = {
    id?: string;
    source?: string;
    type: string;
    time?: string;
    contentType?: string;
    dataSchema?: string;
    data?: Uint8Array | string;
    headers?: Record<string, string>;
    key?: string;
    topic?: string;
    attempt?: number;
};
/**
 * @typedef {object} EventInit
 * @property {string} [id]
 * @property {string} [source]
 * @property {string} type
 * @property {string} [time]
 * @property {string} [contentType]
 * @property {string} [dataSchema]
 * @property {Uint8Array | string} [data]
 * @property {Record<string, string>} [headers]
 * @property {string} [key]
 * @property {string} [topic]
 * @property {number} [attempt]
 */
/**
 * One event delivered to the handler: CloudEvents attributes, the ordering
 * key and delivery metadata. Instances are immutable; the `with*` methods
 * (for tests) return changed copies.
 */
export declare class Event {
    #private;
    /** Unique id (CloudEvents `id`); the host deduplicates on it. */
    id: string;
    /** Origin, a URI reference (CloudEvents `source`). */
    source: string;
    /** Event type, e.g. `order.placed` (CloudEvents `type`). */
    type: string;
    /** @type {string | undefined} When it happened, RFC 3339. */
    time: string | undefined;
    /** @type {string | undefined} Media type of `data` (CloudEvents `datacontenttype`). */
    contentType: string | undefined;
    /** @type {string | undefined} Payload schema or version (CloudEvents `dataschema`). */
    dataSchema: string | undefined;
    /** @type {Uint8Array} The payload. */
    data: Uint8Array;
    /** @type {Readonly<Record<string, string>>} Extension attributes and headers, by lowercase name. */
    headers: Readonly<Record<string, string>>;
    /** @type {string | undefined} Ordering key; `undefined` for keyless events (which have no state). */
    key: string | undefined;
    /** Topic it was consumed from. */
    topic: string;
    /** Delivery attempt, from 1. */
    attempt: number;
    /** @param {EventInit} init */
    constructor(init: EventInit);
    /**
     * An event of type `type` with raw `data`, for tests. Other attributes
     * get test defaults (id `test-event-1`, source `/sluice/test`, topic
     * `test`, attempt 1).
     * @param {string} type
     * @param {Uint8Array | string} [data]
     */
    static of(type: string, data?: Uint8Array | string): Event;
    /**
     * An event of type `type` with `value` as its JSON payload
     * (`application/json`), for tests.
     * @param {string} type
     * @param {unknown} value
     */
    static fromJson(type: string, value: unknown): Event;
    /** @param {string} id */
    withId(id: string): Event;
    /** @param {string} source */
    withSource(source: string): Event;
    /** @param {string} type */
    withType(type: string): Event;
    /** @param {string} time */
    withTime(time: string): Event;
    /** @param {string | undefined} key */
    withKey(key: string | undefined): Event;
    /** @param {string} topic */
    withTopic(topic: string): Event;
    /** @param {string} contentType */
    withContentType(contentType: string): Event;
    /** @param {string} dataSchema */
    withDataSchema(dataSchema: string): Event;
    /** @param {Uint8Array | string} data */
    withData(data: Uint8Array | string): Event;
    /** @param {string} name @param {string} value */
    withHeader(name: string, value: string): Event;
    /** @param {number} attempt */
    withAttempt(attempt: number): Event;
    /**
     * The payload as UTF-8 text. A payload that is not UTF-8 is a `Fatal`.
     * @returns {string}
     */
    text(): string;
    /**
     * Parses the payload as JSON. A payload that does not parse is a `Fatal`:
     * retrying would not help. (It does not validate the shape: check the
     * fields you need and throw `Fatal` when they are wrong.)
     * @template [T=any]
     * @returns {T}
     */
    json<T = any>(): T;
    /**
     * A header or extension attribute by name (case-insensitive).
     * @param {string} name
     * @returns {string | undefined}
     */
    header(name: string): string | undefined;
}
export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
/** @typedef {'trace' | 'debug' | 'info' | 'warn' | 'error'} Level */
/** The levels, lowest first. @type {readonly Level[]} */
export declare const LEVELS: readonly Level[];
export type Emit = {
    /**
     * Destination topic.
     */
    topic: string;
    /**
     * Event type, e.g. `stock.reserved`.
     */
    type: string;
    /**
     * Ordering key of the new event.
     */
    key?: string;
    /**
     * Payload; a string is sent as UTF-8.
     */
    data?: Uint8Array | string;
    /**
     * Media type of the payload.
     */
    contentType?: string;
    /**
     * Payload schema or version.
     */
    dataSchema?: string;
    /**
     * Extra extension attributes.
     */
    headers?: Record<string, string>;
};
export type OutgoingEvent = {
    topic: string;
    type: string;
    key?: string;
    data: Uint8Array;
    contentType?: string;
    dataSchema?: string;
    headers: Array<{
        name: string;
        value: string;
    }>;
};
export type Backend = {
    /**
     * Buffers an event; returns its id. Throws `Fatal` when invalid.
     */
    emit: (event: OutgoingEvent) => string;
    /**
     * Throws `StateError`.
     */
    get: (name: string) => Uint8Array | undefined;
    /**
     * Throws `StateError`.
     */
    set: (name: string, value: Uint8Array) => void;
    /**
     * Throws `StateError`.
     */
    delete: (name: string) => void;
    /**
     * Throws `StateError`.
     */
    keys: () => string[];
    log: (level: Level, message: string) => void;
};
/**
 * Per-key state: a small map from field names to byte values, scoped to the
 * (handler, key of the current event). Every method throws `StateError` on
 * a keyless event.
 */
export declare class State {
    #private;
    /** @param {Backend} backend */
    constructor(backend: Backend);
    /**
     * A raw field; `undefined` when it was never set or was deleted.
     * @param {string} name
     * @returns {Uint8Array | undefined}
     */
    get(name: string): Uint8Array | undefined;
    /**
     * A field as UTF-8 text; `undefined` when absent.
     * @param {string} name
     * @returns {string | undefined}
     */
    getText(name: string): string | undefined;
    /**
     * A field stored as JSON, parsed; `undefined` when absent. A value that
     * does not parse is a `Fatal` (the stored state and the code disagree).
     * @template [T=any]
     * @param {string} name
     * @returns {T | undefined}
     */
    getJson<T = any>(name: string): T | undefined;
    /**
     * Writes a field (a string is stored as UTF-8), replacing any previous
     * value.
     * @param {string} name
     * @param {Uint8Array | string} value
     */
    set(name: string, value: Uint8Array | string): void;
    /**
     * Writes a field as JSON.
     * @param {string} name
     * @param {unknown} value
     */
    setJson(name: string, value: unknown): void;
    /**
     * Deletes a field. Deleting a missing field is not an error.
     * @param {string} name
     */
    delete(name: string): void;
    /**
     * Names of the fields that are set, sorted.
     * @returns {string[]}
     */
    keys(): string[];
}
/** Log lines, attached to the outcome of the current event. */
export declare class Log {
    #private;
    /** @param {Backend} backend */
    constructor(backend: Backend);
    /**
     * Logs at `level`. Parts are joined with spaces; non-strings are shown as
     * JSON (errors with their stack).
     * @param {Level} level
     * @param {...unknown} parts
     */
    at(level: Level, ...parts: unknown[]): void;
    /** @param {...unknown} parts */
    trace(...parts: unknown[]): void;
    /** @param {...unknown} parts */
    debug(...parts: unknown[]): void;
    /** @param {...unknown} parts */
    info(...parts: unknown[]): void;
    /** @param {...unknown} parts */
    warn(...parts: unknown[]): void;
    /** @param {...unknown} parts */
    error(...parts: unknown[]): void;
}
export type EmitJsonOptions = {
    key?: string;
    dataSchema?: string;
    headers?: Record<string, string>;
    /**
     * Default `application/json`.
     */
    contentType?: string;
};
/**
 * Options of `ctx.emitJson`.
 * @typedef {object} EmitJsonOptions
 * @property {string} [key]
 * @property {string} [dataSchema]
 * @property {Record<string, string>} [headers]
 * @property {string} [contentType] Default `application/json`.
 */
/**
 * What a handler uses to act: emit events, read and write the state of the
 * event's key, and log. Effects are buffered by the host and commit only if
 * the handler returns without throwing.
 */
export declare class Ctx {
    #private;
    /** The state of the current event's key. */
    state: State;
    /** Logging. */
    log: Log;
    /** @param {Backend} backend */
    constructor(backend: Backend);
    /**
     * Emits an event; returns the id the host assigned, which is the same on
     * every retry of the current event. An invalid event (bad topic, empty
     * type, reserved or bad header name) is a `Fatal`.
     * @param {Emit} event
     * @returns {string}
     */
    emit(event: Emit): string;
    /**
     * Emits an event of type `type` to `topic` with `value` as its JSON
     * payload (`application/json`); returns the assigned id.
     * @param {string} topic
     * @param {string} type
     * @param {unknown} value
     * @param {EmitJsonOptions} [options]
     * @returns {string}
     */
    emitJson(topic: string, type: string, value: unknown, options?: EmitJsonOptions): string;
}
