/**
 * An in-memory fake of the Sluice host, for unit-testing handler logic
 * natively with `node --test`, without building a component.
 *
 * `TestHost` mimics the host's contract: state is scoped to the event's key
 * (a keyless event gets `StateError` `no-key`, a `Fatal`), and the emits and
 * state writes of a call that fails are rolled back, as the real host
 * discards them; logs are kept. Exceptions map to outcomes exactly as in
 * the component (`Fatal`, `Retryable`, anything else retryable with its
 * stack). To run the real component in the real runtime, use `sluice test`.
 *
 *     import { TestHost } from '@sluice/sdk/testing';
 *     const host = new TestHost().withStateJson('A', 'available', 3);
 *     await host.run(handle, Event.fromJson('order.placed', {...}).withKey('A'));
 *     assert.equal(host.emitted()[0].type, 'stock.reserved');
 */
import { Event } from './index.js';
export { Event };
export type Backend = import('./index.js').Backend;
/** Header names the host sets itself on emitted events. */
export declare const RESERVED_HEADERS: readonly string[];
/**
 * An event emitted by a successful call, with the id the fake host
 * assigned (`<source event id>/<index within the call>`).
 */
export declare class Emitted {
    id: string;
    topic: string;
    type: string;
    /** @type {string | undefined} */
    key: string | undefined;
    /** @type {Uint8Array} */
    data: Uint8Array;
    /** @type {string | undefined} */
    contentType: string | undefined;
    /** @type {string | undefined} */
    dataSchema: string | undefined;
    /** @type {Record<string, string>} */
    headers: Record<string, string>;
    /**
     * @param {string} id
     * @param {import('./index.js').OutgoingEvent} event
     */
    constructor(id: string, event: import('./index.js').OutgoingEvent);
    /** The payload as text. */
    text(): string;
    /**
     * The payload parsed as JSON.
     * @template [T=any]
     * @returns {T}
     */
    json<T = any>(): T;
}
export type LogLine = {
    level: import('./index.js').Level;
    message: string;
};
/**
 * @typedef {{ level: import('./index.js').Level, message: string }} LogLine
 */
/**
 * The in-memory host. State persists across `run` calls, per key, so a
 * sequence of events can be tested.
 */
export declare class TestHost {
    #private;
    /**
     * Seeds a state field of `key` with `value` as JSON. Returns the host.
     * @param {string} key
     * @param {string} name
     * @param {unknown} value
     */
    withStateJson(key: string, name: string, value: unknown): this;
    /**
     * Seeds a raw state field of `key` (a string is stored as UTF-8).
     * Returns the host.
     * @param {string} key
     * @param {string} name
     * @param {Uint8Array | string} value
     */
    withState(key: string, name: string, value: Uint8Array | string): this;
    /**
     * Runs the handler on `event` and returns its outcome, as the host would
     * record it: `{kind: 'ok'}` or `{kind: 'retryable' | 'fatal', message}`.
     * Never rejects. On an error, this call's emits and state writes are
     * rolled back; logs are kept.
     * @param {import('./index.js').Handler | { default?: unknown, handle?: unknown }} handler
     *   the handler function, or its module
     * @param {Event} event
     * @returns {Promise<import('./index.js').Outcome>}
     */
    outcome(handler: import('./index.js').Handler | {
        default?: unknown;
        handle?: unknown;
    }, event: Event): Promise<import('./index.js').Outcome>;
    /**
     * Runs the handler on `event`. Resolves when it succeeds; rejects with a
     * `Fatal` or a `Retryable` (as the host would classify the failure; an
     * unexpected exception becomes a `Retryable` whose `cause` is the
     * original error) after rolling back this call's effects.
     * @param {import('./index.js').Handler | { default?: unknown, handle?: unknown }} handler
     * @param {Event} event
     * @returns {Promise<void>}
     */
    run(handler: import('./index.js').Handler | {
        default?: unknown;
        handle?: unknown;
    }, event: Event): Promise<void>;
    /**
     * Every event emitted by successful calls so far, in order.
     * @returns {readonly Emitted[]}
     */
    emitted(): readonly Emitted[];
    /**
     * Removes and returns the emitted events.
     * @returns {Emitted[]}
     */
    takeEmitted(): Emitted[];
    /**
     * Log lines of all calls, in order.
     * @returns {readonly LogLine[]}
     */
    logs(): readonly LogLine[];
    /**
     * A raw state field of `key`; `undefined` when absent.
     * @param {string} key
     * @param {string} name
     * @returns {Uint8Array | undefined}
     */
    stateOf(key: string, name: string): Uint8Array | undefined;
    /**
     * A JSON state field of `key`, parsed; `undefined` when absent or when it
     * does not parse.
     * @template [T=any]
     * @param {string} key
     * @param {string} name
     * @returns {T | undefined}
     */
    stateJsonOf<T = any>(key: string, name: string): T | undefined;
    /**
     * The state of `key` as an object of JSON values (raw values that are not
     * JSON appear as strings).
     * @param {string} key
     * @returns {Record<string, unknown>}
     */
    stateJsonSnapshot(key: string): Record<string, unknown>;
    /**
     * The keys that have state.
     * @returns {string[]}
     */
    keys(): string[];
}
