/**
 * # inventory-js: reserve stock per SKU
 *
 * A TypeScript port of `examples/inventory` (Rust); it behaves the same on
 * the same event files. Part of the order-placed choreography. Events are
 * keyed by SKU, so every SKU's stock is per-key state and events of one SKU
 * never race.
 *
 * - `stock.received` `{sku, quantity}` adds stock.
 * - `order.placed` reserves the order's quantity of the SKU and emits
 *   `stock.reserved` to the `inventory` topic, or `stock.rejected` when
 *   there is not enough. Two payload versions are accepted, told apart by
 *   the event's `dataschema`: v1 has `qty`, v2 has `quantity` and an
 *   optional `warehouse`. An unknown version or a malformed payload is
 *   fatal (dead-lettered), since retrying cannot fix it.
 *
 * Quantities are JSON numbers that must be non-negative safe integers
 * (up to 2^53 - 1; the Rust handler takes any u64).
 */
import { type Ctx, type Event, Fatal, handler } from '@sluice/sdk';

/** Topic this handler emits to. */
export const TOPIC = 'inventory';
/** `dataschema` of version 1 of `order.placed` (also assumed when absent). */
export const ORDER_PLACED_V1 = 'urn:sluice:example:order-placed:v1';
/** `dataschema` of version 2 of `order.placed`. */
export const ORDER_PLACED_V2 = 'urn:sluice:example:order-placed:v2';

/** The fields this handler needs, whatever the payload version. */
interface Order {
  orderId: string;
  sku: string;
  quantity: number;
}

/** Payload of `stock.reserved`. */
export interface StockReserved {
  order_id: string;
  sku: string;
  /** Units reserved. */
  quantity: number;
  /** Units left after the reservation. */
  remaining: number;
}

/** Payload of `stock.rejected`. */
export interface StockRejected {
  order_id: string;
  sku: string;
  /** Units requested. */
  requested: number;
  /** Units available. */
  available: number;
}

type FieldKind = 'string' | 'count' | 'string?';
type Parsed<T extends Record<string, FieldKind>> = {
  [K in keyof T]: T[K] extends 'string' ? string : T[K] extends 'count' ? number : string | undefined;
};

/**
 * Parses the payload as a JSON object with exactly the given fields (like
 * serde with `deny_unknown_fields` when `strict`); anything else is fatal.
 */
function payload<T extends Record<string, FieldKind>>(
  event: Event,
  fields: T,
  strict: boolean,
): Parsed<T> {
  const value: unknown = event.json();
  const bad = (why: string) => new Fatal(`event ${event.id} (${event.type}): payload is not the expected JSON: ${why}`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('expected an object');
  const obj = value as Record<string, unknown>;
  if (strict) {
    for (const name of Object.keys(obj)) {
      if (!(name in fields)) throw bad(`unknown field \`${name}\`, expected one of ${Object.keys(fields).map((f) => `\`${f}\``).join(', ')}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [name, kind] of Object.entries(fields)) {
    const v = obj[name];
    if (kind === 'string?') {
      if (v !== undefined && v !== null && typeof v !== 'string') throw bad(`field \`${name}\` must be a string`);
      out[name] = v ?? undefined;
    } else if (v === undefined) {
      throw bad(`missing field \`${name}\``);
    } else if (kind === 'string' && typeof v !== 'string') {
      throw bad(`field \`${name}\` must be a string`);
    } else if (kind === 'count' && !(typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) {
      throw bad(`field \`${name}\` must be a non-negative integer`);
    } else {
      out[name] = v;
    }
  }
  return out as Parsed<T>;
}

function parseOrder(event: Event): Order {
  switch (event.dataSchema) {
    case undefined:
    case ORDER_PLACED_V1: {
      const v1 = payload(event, { order_id: 'string', sku: 'string', qty: 'count', email: 'string?' }, true);
      return { orderId: v1.order_id, sku: v1.sku, quantity: v1.qty };
    }
    case ORDER_PLACED_V2: {
      const v2 = payload(
        event,
        { order_id: 'string', sku: 'string', quantity: 'count', warehouse: 'string?', email: 'string?' },
        true,
      );
      return { orderId: v2.order_id, sku: v2.sku, quantity: v2.quantity };
    }
    default:
      throw new Fatal(`unsupported order.placed schema ${JSON.stringify(event.dataSchema)}`);
  }
}

/**
 * Checks that the payload's SKU is the event's key: state is per key, so a
 * mismatch would touch the wrong SKU's stock.
 */
function checkKey(event: Event, sku: string): void {
  if (event.key === undefined) throw new Fatal('inventory events must be keyed by SKU');
  if (event.key !== sku) {
    throw new Fatal(`event key ${JSON.stringify(event.key)} is not the payload's SKU ${JSON.stringify(sku)}`);
  }
}

function count(ctx: Ctx, name: string): number {
  return ctx.state.getJson<number>(name) ?? 0;
}

/** The handler. */
export default handler((event, ctx) => {
  switch (event.type) {
    case 'stock.received': {
      const received = payload(event, { sku: 'string', quantity: 'count' }, false);
      checkKey(event, received.sku);
      const total = Math.min(count(ctx, 'available') + received.quantity, Number.MAX_SAFE_INTEGER);
      ctx.state.setJson('available', total);
      ctx.log.info(`${received.sku}: +${received.quantity} -> ${total}`);
      return;
    }
    case 'order.placed': {
      const order = parseOrder(event);
      checkKey(event, order.sku);
      if (order.quantity === 0) throw new Fatal('order quantity must be positive');
      const available = count(ctx, 'available');
      if (available >= order.quantity) {
        const remaining = available - order.quantity;
        ctx.state.setJson('available', remaining);
        ctx.state.setJson('reserved', count(ctx, 'reserved') + order.quantity);
        const reserved: StockReserved = {
          order_id: order.orderId,
          sku: order.sku,
          quantity: order.quantity,
          remaining,
        };
        ctx.emitJson(TOPIC, 'stock.reserved', reserved, { key: order.orderId });
        ctx.log.info(`reserved ${order.quantity} x ${order.sku} for ${order.orderId}`);
      } else {
        const rejected: StockRejected = {
          order_id: order.orderId,
          sku: order.sku,
          requested: order.quantity,
          available,
        };
        ctx.emitJson(TOPIC, 'stock.rejected', rejected, { key: order.orderId });
        ctx.log.warn(`rejected ${order.quantity} x ${order.sku} for ${order.orderId}: ${available} available`);
      }
      return;
    }
    // Subscriptions may deliver types this handler does not care about.
    default:
      ctx.log.debug(`ignoring ${event.type}`);
  }
});
