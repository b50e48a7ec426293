// @ts-check
/**
 * The component side of the SDK: wires the `sluice:handler` WIT imports to
 * `Ctx` and maps a handler's outcome to the WIT result of `handle`.
 *
 * Only the bundle built by `sluice-build-js` imports this module; it cannot
 * run under Node (its `sluice:handler/...` imports exist only inside the
 * component). Its entry is, in effect:
 *
 *     import * as user from './your-handler.ts';
 *     import { exportHandler } from '@sluice/sdk/component';
 *     export const handle = exportHandler(user);
 *
 * How componentize-js maps the export `handle: func(event) -> result<_,
 * handler-error>`: returning (or resolving) is `ok`; throwing (or rejecting)
 * is `err`, where the error value is the thrown value's own `payload`
 * property (a thrown `Error` without one would trap instead). So the entry
 * throws `{ payload: { tag: 'fatal' | 'retryable', val: message } }` and
 * never lets another exception escape.
 */

import * as outbox from 'sluice:handler/outbox@0.1.0';
import * as state from 'sluice:handler/state@0.1.0';
import * as wlog from 'sluice:handler/log@0.1.0';

import { Ctx, Event, Fatal, StateError, handlerOf, invoke } from './index.js';

/**
 * The error value of a failed import call: componentize-js throws an error
 * whose `payload` is the WIT variant (older versions threw the variant
 * itself).
 * @param {unknown} e
 * @returns {any}
 */
function variantOf(e) {
  if (e !== null && typeof e === 'object' && 'payload' in e) return /** @type {any} */ (e).payload;
  return e;
}

/**
 * @template T
 * @param {() => T} call
 * @returns {T}
 */
function stateCall(call) {
  try {
    return call();
  } catch (e) {
    const v = variantOf(e);
    if (v?.tag === 'no-key') throw new StateError('no-key');
    if (v?.tag === 'too-large') throw new StateError('too-large', String(v.val));
    throw e;
  }
}

/** @type {import('./index.js').Backend} */
const witBackend = {
  emit(event) {
    try {
      return outbox.emit({
        topic: event.topic,
        type: event.type,
        key: event.key,
        data: event.data,
        contentType: event.contentType,
        dataSchema: event.dataSchema,
        headers: event.headers,
      });
    } catch (e) {
      const v = variantOf(e);
      if (v?.tag === 'invalid') throw new Fatal(`invalid emit: ${v.val}`);
      throw e;
    }
  },
  get: (name) => stateCall(() => state.get(name)),
  set: (name, value) => stateCall(() => state.set(name, value)),
  delete: (name) => stateCall(() => state.delete(name)),
  keys: () => stateCall(() => state.keys()),
  log: (level, message) => wlog.log(level, message),
};

/**
 * @param {import('sluice:handler/types@0.1.0').Event} e
 * @returns {Event}
 */
function fromWit(e) {
  /** @type {Record<string, string>} */
  const headers = {};
  for (const { name, value } of e.headers) headers[name] = value;
  return new Event({
    id: e.id,
    source: e.source,
    type: e.type,
    time: e.time ?? undefined,
    contentType: e.contentType ?? undefined,
    dataSchema: e.dataSchema ?? undefined,
    data: e.data,
    headers,
    key: e.key ?? undefined,
    topic: e.topic,
    attempt: e.attempt,
  });
}

/**
 * @param {import('./index.js').Outcome} outcome
 * @returns {void}
 */
function finish(outcome) {
  if (outcome.kind === 'ok') return;
  const variant = { tag: outcome.kind, val: outcome.message };
  // `payload` is what componentize-js takes as the error value; `tag`/`val`
  // on the thrown object itself cover bindings that take the thrown value.
  throw { payload: variant, ...variant };
}

/**
 * Builds the component export `handle` from a handler module (or function).
 * @param {any} mod
 * @returns {(event: import('sluice:handler/types@0.1.0').Event) => void | Promise<void>}
 */
export function exportHandler(mod) {
  const fn = handlerOf(mod);
  const ctx = new Ctx(witBackend);
  return function handle(witEvent) {
    /** @type {import('./index.js').Outcome | Promise<import('./index.js').Outcome>} */
    let outcome;
    try {
      outcome = invoke(fn, fromWit(witEvent), ctx);
    } catch (e) {
      outcome = { kind: 'retryable', message: `sluice sdk: ${String(e)}` };
    }
    if (outcome instanceof Promise) return outcome.then(finish);
    return finish(outcome);
  };
}
