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
/**
 * Builds the component export `handle` from a handler module (or function).
 * @param {any} mod
 * @returns {(event: import('sluice:handler/types@0.1.0').Event) => void | Promise<void>}
 */
export declare function exportHandler(mod: any): (event: import('sluice:handler/types@0.1.0').Event) => void | Promise<void>;
