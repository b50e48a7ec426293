// @ts-check
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

import { Ctx, Event, Fatal, HandlerError, Retryable, StateError, handlerOf, invoke } from './index.js';

export { Event };

/** @typedef {import('./index.js').Backend} Backend */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Header names the host sets itself on emitted events. */
export const RESERVED_HEADERS = Object.freeze(['causationid', 'correlationid', 'traceparent', 'tracestate']);

/** @param {string} name */
function validTopic(name) {
  return name.length > 0 && name.length <= 200 && /^[A-Za-z0-9._-]+$/.test(name);
}

/** @param {string} name */
function validHeaderName(name) {
  return name.length > 0 && name.length <= 64 && /^[a-z0-9._-]+$/.test(name);
}

/**
 * An event emitted by a successful call, with the id the fake host
 * assigned (`<source event id>/<index within the call>`).
 */
export class Emitted {
  /**
   * @param {string} id
   * @param {import('./index.js').OutgoingEvent} event
   */
  constructor(id, event) {
    this.id = id;
    this.topic = event.topic;
    this.type = event.type;
    /** @type {string | undefined} */
    this.key = event.key;
    /** @type {Uint8Array} */
    this.data = event.data;
    /** @type {string | undefined} */
    this.contentType = event.contentType;
    /** @type {string | undefined} */
    this.dataSchema = event.dataSchema;
    /** @type {Record<string, string>} */
    this.headers = Object.fromEntries(event.headers.map((h) => [h.name, h.value]));
    Object.freeze(this);
  }

  /** The payload as text. */
  text() {
    return decoder.decode(this.data);
  }

  /**
   * The payload parsed as JSON.
   * @template [T=any]
   * @returns {T}
   */
  json() {
    return JSON.parse(this.text());
  }
}

/**
 * @typedef {{ level: import('./index.js').Level, message: string }} LogLine
 */

/**
 * The in-memory host. State persists across `run` calls, per key, so a
 * sequence of events can be tested.
 */
export class TestHost {
  /** @type {Map<string, Map<string, Uint8Array>>} */
  #state = new Map();
  /** @type {Emitted[]} */
  #emitted = [];
  /** @type {LogLine[]} */
  #logs = [];

  /**
   * Seeds a state field of `key` with `value` as JSON. Returns the host.
   * @param {string} key
   * @param {string} name
   * @param {unknown} value
   */
  withStateJson(key, name, value) {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError('withStateJson: the value does not serialize to JSON');
    return this.withState(key, name, text);
  }

  /**
   * Seeds a raw state field of `key` (a string is stored as UTF-8).
   * Returns the host.
   * @param {string} key
   * @param {string} name
   * @param {Uint8Array | string} value
   */
  withState(key, name, value) {
    let fields = this.#state.get(key);
    if (!fields) this.#state.set(key, (fields = new Map()));
    fields.set(name, typeof value === 'string' ? encoder.encode(value) : value);
    return this;
  }

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
  async outcome(handler, event) {
    const fn = handlerOf(handler);
    const call = new Call(event, event.key === undefined ? undefined : this.#state.get(event.key));
    const outcome = await invoke(fn, event, new Ctx(call));
    this.#logs.push(...call.logs);
    if (outcome.kind === 'ok') {
      if (event.key !== undefined) this.#state.set(event.key, call.state);
      this.#emitted.push(...call.emitted);
    }
    return outcome;
  }

  /**
   * Runs the handler on `event`. Resolves when it succeeds; rejects with a
   * `Fatal` or a `Retryable` (as the host would classify the failure; an
   * unexpected exception becomes a `Retryable` whose `cause` is the
   * original error) after rolling back this call's effects.
   * @param {import('./index.js').Handler | { default?: unknown, handle?: unknown }} handler
   * @param {Event} event
   * @returns {Promise<void>}
   */
  async run(handler, event) {
    /** @type {unknown} */
    let thrown;
    const fn = handlerOf(handler);
    /** @type {import('./index.js').Handler} */
    const spy = async (e, ctx) => {
      try {
        await fn(e, ctx);
      } catch (err) {
        thrown = err;
        throw err;
      }
    };
    const outcome = await this.outcome(spy, event);
    if (outcome.kind === 'ok') return;
    if (thrown instanceof HandlerError) throw thrown;
    throw outcome.kind === 'fatal'
      ? new Fatal(outcome.message, { cause: thrown })
      : new Retryable(outcome.message, { cause: thrown });
  }

  /**
   * Every event emitted by successful calls so far, in order.
   * @returns {readonly Emitted[]}
   */
  emitted() {
    return this.#emitted;
  }

  /**
   * Removes and returns the emitted events.
   * @returns {Emitted[]}
   */
  takeEmitted() {
    const out = this.#emitted;
    this.#emitted = [];
    return out;
  }

  /**
   * Log lines of all calls, in order.
   * @returns {readonly LogLine[]}
   */
  logs() {
    return this.#logs;
  }

  /**
   * A raw state field of `key`; `undefined` when absent.
   * @param {string} key
   * @param {string} name
   * @returns {Uint8Array | undefined}
   */
  stateOf(key, name) {
    return this.#state.get(key)?.get(name);
  }

  /**
   * A JSON state field of `key`, parsed; `undefined` when absent or when it
   * does not parse.
   * @template [T=any]
   * @param {string} key
   * @param {string} name
   * @returns {T | undefined}
   */
  stateJsonOf(key, name) {
    const bytes = this.stateOf(key, name);
    if (bytes === undefined) return undefined;
    try {
      return JSON.parse(decoder.decode(bytes));
    } catch {
      return undefined;
    }
  }

  /**
   * The state of `key` as an object of JSON values (raw values that are not
   * JSON appear as strings).
   * @param {string} key
   * @returns {Record<string, unknown>}
   */
  stateJsonSnapshot(key) {
    /** @type {Record<string, unknown>} */
    const out = {};
    for (const [name, bytes] of [...(this.#state.get(key) ?? new Map())].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const text = decoder.decode(bytes);
      try {
        out[name] = JSON.parse(text);
      } catch {
        out[name] = text;
      }
    }
    return out;
  }

  /**
   * The keys that have state.
   * @returns {string[]}
   */
  keys() {
    return [...this.#state.keys()].sort();
  }
}

/**
 * One call's view: a copy of its key's state, its emits and logs.
 * @implements {Backend}
 */
class Call {
  /**
   * @param {Event} event
   * @param {Map<string, Uint8Array> | undefined} state
   */
  constructor(event, state) {
    this.event = event;
    /** @type {Map<string, Uint8Array>} */
    this.state = new Map(state ?? []);
    /** @type {Emitted[]} */
    this.emitted = [];
    /** @type {LogLine[]} */
    this.logs = [];
  }

  #scope() {
    if (this.event.key === undefined) throw new StateError('no-key');
    return this.state;
  }

  /** @param {import('./index.js').OutgoingEvent} event */
  emit(event) {
    if (!validTopic(event.topic)) {
      throw new Fatal(
        `invalid emit: topic ${JSON.stringify(event.topic)} is not valid: 1 to 200 letters, digits, '.', '_' or '-'`,
      );
    }
    if (event.type.trim() === '') throw new Fatal('invalid emit: type is empty');
    /** @type {Array<{ name: string, value: string }>} */
    const headers = [];
    for (const { name, value } of event.headers) {
      const lower = name.toLowerCase();
      if (!validHeaderName(lower)) {
        throw new Fatal(
          `invalid emit: header name ${JSON.stringify(lower)} is not allowed: use lowercase letters, digits, '-', '_' or '.'`,
        );
      }
      if (RESERVED_HEADERS.includes(lower)) throw new Fatal(`invalid emit: header ${JSON.stringify(lower)} is set by the host`);
      headers.push({ name: lower, value });
    }
    const id = `${this.event.id}/${this.emitted.length}`;
    this.emitted.push(new Emitted(id, { ...event, data: event.data.slice(), headers }));
    return id;
  }

  /** @param {string} name */
  get(name) {
    const v = this.#scope().get(name);
    return v === undefined ? undefined : v.slice();
  }

  /** @param {string} name @param {Uint8Array} value */
  set(name, value) {
    this.#scope().set(name, value.slice());
  }

  /** @param {string} name */
  delete(name) {
    this.#scope().delete(name);
  }

  keys() {
    return [...this.#scope().keys()].sort();
  }

  /** @param {import('./index.js').Level} level @param {string} message */
  log(level, message) {
    this.logs.push({ level, message });
  }
}
