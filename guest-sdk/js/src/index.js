// @ts-check
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

const encoder = new TextEncoder();

/** @param {Uint8Array} bytes @param {boolean} fatal */
function decodeUtf8(bytes, fatal) {
  return new TextDecoder('utf-8', { fatal }).decode(bytes);
}

/**
 * Why a handler did not process an event. Throw one of its subclasses,
 * `Retryable` or `Fatal`; the class decides what the host does next.
 */
export class HandlerError extends Error {
  /**
   * @param {'retryable' | 'fatal'} kind
   * @param {string} message
   * @param {{ cause?: unknown }} [options]
   */
  constructor(kind, message, options) {
    super(message, options);
    /** @type {'retryable' | 'fatal'} */
    this.kind = kind;
    this.name = kind === 'fatal' ? 'Fatal' : 'Retryable';
  }

  /** Is this a retryable error? */
  get isRetryable() {
    return this.kind === 'retryable';
  }
}

/**
 * A transient failure (a dependency was down, a lock timed out): the host
 * discards this attempt's effects and retries the event later with
 * exponential backoff, up to the handler's maximum number of attempts.
 */
export class Retryable extends HandlerError {
  /** @param {string} message @param {{ cause?: unknown }} [options] */
  constructor(message, options) {
    super('retryable', message, options);
  }
}

/**
 * A permanent failure (a poison event: malformed payload, unknown version,
 * violated invariant): the host discards this attempt's effects and moves
 * the event straight to the dead-letter queue.
 */
export class Fatal extends HandlerError {
  /** @param {string} message @param {{ cause?: unknown }} [options] */
  constructor(message, options) {
    super('fatal', message, options);
  }
}

/**
 * A state call failed: the event has no key (`reason` `no-key`) or the write
 * exceeds the handler's state limits (`too-large`). It is a `Fatal`: using
 * state on a keyless event or outgrowing the limits will not get better on
 * a retry.
 */
export class StateError extends Fatal {
  /** @param {'no-key' | 'too-large'} reason @param {string} [detail] */
  constructor(reason, detail) {
    super(
      reason === 'no-key'
        ? 'the event has no key, so it has no state'
        : `state too large: ${detail ?? ''}`,
    );
    /** @type {'no-key' | 'too-large'} */
    this.reason = reason;
    this.name = 'StateError';
  }
}

/**
 * The outcome of one invocation, as the host sees it.
 * @typedef {{ kind: 'ok' } | { kind: 'retryable' | 'fatal', message: string }} Outcome
 */

/** Stack frames of componentize-js's generated glue, which say nothing. */
const INTERNAL_FRAME = /\/sources\/initializer\.js:/;
/** Stack lines kept in the message of an unexpected exception. */
const MAX_FRAMES = 24;

/**
 * Formats an exception that is not a `HandlerError` as the message of a
 * retryable error: `Name: message` and the stack lines, so that a dead-letter
 * entry says what went wrong and where.
 * @param {unknown} e
 * @returns {string}
 */
export function describeException(e) {
  if (e instanceof Error) {
    const head = `${e.name || 'Error'}: ${e.message}`;
    const stack = typeof e.stack === 'string' ? e.stack.trimEnd() : '';
    if (!stack) return head;
    // V8 stacks start with the head line; SpiderMonkey's are frames only.
    const frames = stack.startsWith(head) ? stack.slice(head.length).replace(/^\n/, '') : stack;
    const frameLines = frames
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0 && !INTERNAL_FRAME.test(l))
      .map((l) => (l.startsWith('at ') ? `    ${l}` : `    at ${l}`));
    // Runs of one frame (deep recursion) collapse to one line; at most
    // MAX_FRAMES lines are kept.
    /** @type {string[]} */
    const lines = [];
    for (let i = 0; i < frameLines.length; ) {
      let j = i + 1;
      while (j < frameLines.length && frameLines[j] === frameLines[i]) j++;
      lines.push(j - i > 1 ? `${frameLines[i]} (${j - i} times)` : frameLines[i]);
      i = j;
    }
    if (lines.length > MAX_FRAMES) {
      const more = lines.length - MAX_FRAMES;
      lines.length = MAX_FRAMES;
      lines.push(`    ... ${more} more`);
    }
    return lines.length > 0 ? `${head}\n${lines.join('\n')}` : head;
  }
  if (typeof e === 'string') return `uncaught exception: ${e}`;
  let text;
  try {
    text = JSON.stringify(e);
  } catch {
    text = undefined;
  }
  return `uncaught exception: ${text ?? String(e)}`;
}

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
export function outcomeOf(e) {
  if (e instanceof HandlerError) return { kind: e.kind, message: e.message };
  if (e !== null && typeof e === 'object') {
    const { tag, val } = /** @type {{ tag?: unknown, val?: unknown }} */ (e);
    if ((tag === 'fatal' || tag === 'retryable') && typeof val === 'string') {
      return { kind: tag, message: val };
    }
  }
  return { kind: 'retryable', message: describeException(e) };
}

/**
 * Runs `fn(event, ctx)` and maps its result (or the promise it returns) to
 * an outcome. Never throws.
 * @param {Handler} fn
 * @param {Event} event
 * @param {Ctx} ctx
 * @returns {Outcome | Promise<Outcome>}
 */
export function invoke(fn, event, ctx) {
  /** @type {unknown} */
  let result;
  try {
    result = fn(event, ctx);
  } catch (e) {
    return outcomeOf(e);
  }
  if (result !== null && typeof result === 'object' && typeof (/** @type {any} */ (result).then) === 'function') {
    return Promise.resolve(result).then(
      () => /** @type {Outcome} */ ({ kind: 'ok' }),
      (e) => outcomeOf(e),
    );
  }
  return { kind: 'ok' };
}

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
export function handler(fn) {
  if (typeof fn !== 'function') throw new TypeError('handler(fn): fn must be a function');
  return fn;
}

/**
 * Finds the handler function in a module namespace: its default export, or
 * else its export named `handle`.
 * @param {any} mod
 * @returns {Handler}
 */
export function handlerOf(mod) {
  if (typeof mod === 'function') return mod;
  const fn = mod?.default ?? mod?.handle;
  if (typeof fn !== 'function') {
    throw new TypeError(
      'the handler module must `export default handler((event, ctx) => ...)` or `export function handle(event, ctx)`',
    );
  }
  return fn;
}

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
export class Event {
  /** @param {EventInit} init */
  constructor(init) {
    /** Unique id (CloudEvents `id`); the host deduplicates on it. */
    this.id = init.id ?? 'test-event-1';
    /** Origin, a URI reference (CloudEvents `source`). */
    this.source = init.source ?? '/sluice/test';
    /** Event type, e.g. `order.placed` (CloudEvents `type`). */
    this.type = init.type;
    /** @type {string | undefined} When it happened, RFC 3339. */
    this.time = init.time;
    /** @type {string | undefined} Media type of `data` (CloudEvents `datacontenttype`). */
    this.contentType = init.contentType;
    /** @type {string | undefined} Payload schema or version (CloudEvents `dataschema`). */
    this.dataSchema = init.dataSchema;
    /** @type {Uint8Array} The payload. */
    this.data = typeof init.data === 'string' ? encoder.encode(init.data) : (init.data ?? new Uint8Array(0));
    /** @type {Readonly<Record<string, string>>} Extension attributes and headers, by lowercase name. */
    this.headers = Object.freeze({ ...(init.headers ?? {}) });
    /** @type {string | undefined} Ordering key; `undefined` for keyless events (which have no state). */
    this.key = init.key;
    /** Topic it was consumed from. */
    this.topic = init.topic ?? 'test';
    /** Delivery attempt, from 1. */
    this.attempt = init.attempt ?? 1;
    Object.freeze(this);
  }

  /**
   * An event of type `type` with raw `data`, for tests. Other attributes
   * get test defaults (id `test-event-1`, source `/sluice/test`, topic
   * `test`, attempt 1).
   * @param {string} type
   * @param {Uint8Array | string} [data]
   */
  static of(type, data) {
    return new Event({ type, data });
  }

  /**
   * An event of type `type` with `value` as its JSON payload
   * (`application/json`), for tests.
   * @param {string} type
   * @param {unknown} value
   */
  static fromJson(type, value) {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError('Event.fromJson: the value does not serialize to JSON');
    return new Event({ type, data: text, contentType: 'application/json' });
  }

  /** @param {Partial<EventInit>} changes */
  #with(changes) {
    return new Event({ ...this.#init(), ...changes });
  }

  /** @returns {EventInit} */
  #init() {
    return {
      id: this.id,
      source: this.source,
      type: this.type,
      time: this.time,
      contentType: this.contentType,
      dataSchema: this.dataSchema,
      data: this.data,
      headers: this.headers,
      key: this.key,
      topic: this.topic,
      attempt: this.attempt,
    };
  }

  /** @param {string} id */
  withId(id) { return this.#with({ id }); }
  /** @param {string} source */
  withSource(source) { return this.#with({ source }); }
  /** @param {string} type */
  withType(type) { return this.#with({ type }); }
  /** @param {string} time */
  withTime(time) { return this.#with({ time }); }
  /** @param {string | undefined} key */
  withKey(key) { return this.#with({ key }); }
  /** @param {string} topic */
  withTopic(topic) { return this.#with({ topic }); }
  /** @param {string} contentType */
  withContentType(contentType) { return this.#with({ contentType }); }
  /** @param {string} dataSchema */
  withDataSchema(dataSchema) { return this.#with({ dataSchema }); }
  /** @param {Uint8Array | string} data */
  withData(data) { return this.#with({ data }); }
  /** @param {string} name @param {string} value */
  withHeader(name, value) {
    return this.#with({ headers: { ...this.headers, [name.toLowerCase()]: value } });
  }
  /** @param {number} attempt */
  withAttempt(attempt) { return this.#with({ attempt }); }

  /**
   * The payload as UTF-8 text. A payload that is not UTF-8 is a `Fatal`.
   * @returns {string}
   */
  text() {
    try {
      return decodeUtf8(this.data, true);
    } catch (e) {
      throw new Fatal(`event ${this.id} (${this.type}): payload is not UTF-8`, { cause: e });
    }
  }

  /**
   * Parses the payload as JSON. A payload that does not parse is a `Fatal`:
   * retrying would not help. (It does not validate the shape: check the
   * fields you need and throw `Fatal` when they are wrong.)
   * @template [T=any]
   * @returns {T}
   */
  json() {
    const text = this.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new Fatal(`event ${this.id} (${this.type}): payload is not the expected JSON: ${why}`, { cause: e });
    }
  }

  /**
   * A header or extension attribute by name (case-insensitive).
   * @param {string} name
   * @returns {string | undefined}
   */
  header(name) {
    const value = this.headers[name.toLowerCase()];
    return typeof value === 'string' ? value : undefined;
  }
}

/** @typedef {'trace' | 'debug' | 'info' | 'warn' | 'error'} Level */

/** The levels, lowest first. @type {readonly Level[]} */
export const LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error']);

/**
 * An event to emit.
 * @typedef {object} Emit
 * @property {string} topic Destination topic.
 * @property {string} type Event type, e.g. `stock.reserved`.
 * @property {string} [key] Ordering key of the new event.
 * @property {Uint8Array | string} [data] Payload; a string is sent as UTF-8.
 * @property {string} [contentType] Media type of the payload.
 * @property {string} [dataSchema] Payload schema or version.
 * @property {Record<string, string>} [headers] Extra extension attributes.
 */

/**
 * An emit as the backend receives it (data as bytes, headers as a list).
 * @typedef {object} OutgoingEvent
 * @property {string} topic
 * @property {string} type
 * @property {string} [key]
 * @property {Uint8Array} data
 * @property {string} [contentType]
 * @property {string} [dataSchema]
 * @property {Array<{ name: string, value: string }>} headers
 */

/**
 * What the handler's host can do: implemented by the component's WIT
 * imports and by `TestHost`. Handler code uses `Ctx` instead.
 * @typedef {object} Backend
 * @property {(event: OutgoingEvent) => string} emit Buffers an event; returns its id. Throws `Fatal` when invalid.
 * @property {(name: string) => Uint8Array | undefined} get Throws `StateError`.
 * @property {(name: string, value: Uint8Array) => void} set Throws `StateError`.
 * @property {(name: string) => void} delete Throws `StateError`.
 * @property {() => string[]} keys Throws `StateError`.
 * @property {(level: Level, message: string) => void} log
 */

/** @param {unknown[]} parts */
function formatLog(parts) {
  return parts
    .map((p) => {
      if (typeof p === 'string') return p;
      if (p instanceof Error) return describeException(p);
      if (p === undefined || typeof p === 'function' || typeof p === 'symbol') return String(p);
      try {
        return JSON.stringify(p) ?? String(p);
      } catch {
        return String(p);
      }
    })
    .join(' ');
}

/**
 * Per-key state: a small map from field names to byte values, scoped to the
 * (handler, key of the current event). Every method throws `StateError` on
 * a keyless event.
 */
export class State {
  /** @type {Backend} */
  #backend;

  /** @param {Backend} backend */
  constructor(backend) {
    this.#backend = backend;
  }

  /**
   * A raw field; `undefined` when it was never set or was deleted.
   * @param {string} name
   * @returns {Uint8Array | undefined}
   */
  get(name) {
    return this.#backend.get(name);
  }

  /**
   * A field as UTF-8 text; `undefined` when absent.
   * @param {string} name
   * @returns {string | undefined}
   */
  getText(name) {
    const bytes = this.get(name);
    if (bytes === undefined) return undefined;
    try {
      return decodeUtf8(bytes, true);
    } catch (e) {
      throw new Fatal(`state field ${JSON.stringify(name)} is not UTF-8`, { cause: e });
    }
  }

  /**
   * A field stored as JSON, parsed; `undefined` when absent. A value that
   * does not parse is a `Fatal` (the stored state and the code disagree).
   * @template [T=any]
   * @param {string} name
   * @returns {T | undefined}
   */
  getJson(name) {
    const bytes = this.get(name);
    if (bytes === undefined) return undefined;
    try {
      return JSON.parse(decodeUtf8(bytes, true));
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new Fatal(`state field ${JSON.stringify(name)} is not the expected JSON: ${why}`, { cause: e });
    }
  }

  /**
   * Writes a field (a string is stored as UTF-8), replacing any previous
   * value.
   * @param {string} name
   * @param {Uint8Array | string} value
   */
  set(name, value) {
    this.#backend.set(name, typeof value === 'string' ? encoder.encode(value) : value);
  }

  /**
   * Writes a field as JSON.
   * @param {string} name
   * @param {unknown} value
   */
  setJson(name, value) {
    this.set(name, toJson(value, `state field ${JSON.stringify(name)}`));
  }

  /**
   * Deletes a field. Deleting a missing field is not an error.
   * @param {string} name
   */
  delete(name) {
    this.#backend.delete(name);
  }

  /**
   * Names of the fields that are set, sorted.
   * @returns {string[]}
   */
  keys() {
    return this.#backend.keys();
  }
}

/**
 * @param {unknown} value
 * @param {string} what
 * @returns {string}
 */
function toJson(value, what) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new Fatal(`${what} does not serialize to JSON: ${why}`, { cause: e });
  }
  if (text === undefined) throw new Fatal(`${what} does not serialize to JSON: ${String(value)}`);
  return text;
}

/** Log lines, attached to the outcome of the current event. */
export class Log {
  /** @type {Backend} */
  #backend;

  /** @param {Backend} backend */
  constructor(backend) {
    this.#backend = backend;
  }

  /**
   * Logs at `level`. Parts are joined with spaces; non-strings are shown as
   * JSON (errors with their stack).
   * @param {Level} level
   * @param {...unknown} parts
   */
  at(level, ...parts) {
    this.#backend.log(level, formatLog(parts));
  }

  /** @param {...unknown} parts */
  trace(...parts) { this.at('trace', ...parts); }
  /** @param {...unknown} parts */
  debug(...parts) { this.at('debug', ...parts); }
  /** @param {...unknown} parts */
  info(...parts) { this.at('info', ...parts); }
  /** @param {...unknown} parts */
  warn(...parts) { this.at('warn', ...parts); }
  /** @param {...unknown} parts */
  error(...parts) { this.at('error', ...parts); }
}

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
export class Ctx {
  /** @type {Backend} */
  #backend;

  /** @param {Backend} backend */
  constructor(backend) {
    this.#backend = backend;
    /** The state of the current event's key. */
    this.state = new State(backend);
    /** Logging. */
    this.log = new Log(backend);
    Object.freeze(this);
  }

  /**
   * Emits an event; returns the id the host assigned, which is the same on
   * every retry of the current event. An invalid event (bad topic, empty
   * type, reserved or bad header name) is a `Fatal`.
   * @param {Emit} event
   * @returns {string}
   */
  emit(event) {
    if (event === null || typeof event !== 'object') throw new TypeError('ctx.emit(event): event must be an object');
    const data = event.data ?? new Uint8Array(0);
    return this.#backend.emit({
      topic: String(event.topic ?? ''),
      type: String(event.type ?? ''),
      key: event.key ?? undefined,
      data: typeof data === 'string' ? encoder.encode(data) : data,
      contentType: event.contentType ?? undefined,
      dataSchema: event.dataSchema ?? undefined,
      headers: Object.entries(event.headers ?? {}).map(([name, value]) => ({ name, value: String(value) })),
    });
  }

  /**
   * Emits an event of type `type` to `topic` with `value` as its JSON
   * payload (`application/json`); returns the assigned id.
   * @param {string} topic
   * @param {string} type
   * @param {unknown} value
   * @param {EmitJsonOptions} [options]
   * @returns {string}
   */
  emitJson(topic, type, value, options = {}) {
    return this.emit({
      topic,
      type,
      data: toJson(value, `the payload of ${type}`),
      contentType: options.contentType ?? 'application/json',
      key: options.key,
      dataSchema: options.dataSchema,
      headers: options.headers,
    });
  }
}
