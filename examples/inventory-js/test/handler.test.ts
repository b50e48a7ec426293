// Unit tests of the handler with the SDK's in-memory TestHost: the same
// cases as the Rust example's tests (examples/inventory/src/lib.rs), plus
// the other fatal cases and the log lines.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Event, Fatal } from '@sluice/sdk';
import { TestHost } from '@sluice/sdk/testing';

import handle, { ORDER_PLACED_V2, type StockReserved } from '../src/handler.ts';

function restock(sku: string, quantity: number): Event {
  return Event.fromJson('stock.received', { sku, quantity }).withKey(sku);
}

function order(id: string, sku: string, qty: number): Event {
  return Event.fromJson('order.placed', { order_id: id, sku, qty }).withKey(sku).withId(id);
}

test('reserves until stock runs out', async () => {
  const host = new TestHost();
  await host.run(handle, restock('A', 3));
  await host.run(handle, order('o1', 'A', 2));
  await host.run(handle, order('o2', 'A', 2));
  const emitted = host.emitted();
  assert.equal(emitted.length, 2);
  assert.equal(emitted[0].type, 'stock.reserved');
  assert.equal(emitted[0].topic, 'inventory');
  assert.equal(emitted[0].key, 'o1');
  assert.equal(emitted[0].id, 'o1/0');
  assert.equal(emitted[0].contentType, 'application/json');
  assert.deepEqual(emitted[0].json<StockReserved>(), { order_id: 'o1', sku: 'A', quantity: 2, remaining: 1 });
  assert.equal(emitted[1].type, 'stock.rejected');
  assert.equal(emitted[1].key, 'o2');
  assert.deepEqual(emitted[1].json(), { order_id: 'o2', sku: 'A', requested: 2, available: 1 });
  assert.equal(host.stateJsonOf('A', 'available'), 1);
  assert.equal(host.stateJsonOf('A', 'reserved'), 2);
  assert.deepEqual(host.logs(), [
    { level: 'info', message: 'A: +3 -> 3' },
    { level: 'info', message: 'reserved 2 x A for o1' },
    { level: 'warn', message: 'rejected 2 x A for o2: 1 available' },
  ]);
});

test('accepts v2 payloads', async () => {
  const host = new TestHost().withStateJson('B', 'available', 10);
  const v2 = Event.fromJson('order.placed', { order_id: 'o9', sku: 'B', quantity: 4, warehouse: 'ams' })
    .withKey('B')
    .withDataSchema(ORDER_PLACED_V2);
  await host.run(handle, v2);
  assert.equal(host.stateJsonOf('B', 'available'), 6);
  assert.equal(host.stateJsonOf('B', 'reserved'), 4);
});

test('poison events are fatal', async () => {
  const host = new TestHost();
  const garbage = Event.of('order.placed', 'not json').withKey('A');
  await assert.rejects(host.run(handle, garbage), Fatal);
  const unknown = order('o1', 'A', 1).withDataSchema('urn:other:v9');
  await assert.rejects(host.run(handle, unknown), { name: 'Fatal', message: 'unsupported order.placed schema "urn:other:v9"' });
  const wrongKey = order('o1', 'A', 1).withKey('B');
  await assert.rejects(host.run(handle, wrongKey), { name: 'Fatal', message: 'event key "B" is not the payload\'s SKU "A"' });
  const keyless = order('o1', 'A', 1).withKey(undefined);
  await assert.rejects(host.run(handle, keyless), { name: 'Fatal', message: 'inventory events must be keyed by SKU' });
  await assert.rejects(host.run(handle, order('o1', 'A', 0)), { name: 'Fatal', message: 'order quantity must be positive' });
  assert.equal(host.emitted().length, 0);
});

test('payloads of the wrong shape are fatal', async () => {
  const host = new TestHost();
  const cases: unknown[] = [
    [1, 2],
    { order_id: 'o1', sku: 'A' },
    { order_id: 'o1', sku: 'A', qty: -1 },
    { order_id: 'o1', sku: 'A', qty: 1.5 },
    { order_id: 'o1', sku: 'A', qty: '1' },
    { order_id: 1, sku: 'A', qty: 1 },
    { order_id: 'o1', sku: 'A', qty: 1, extra: true },
    { order_id: 'o1', sku: 'A', quantity: 1 },
  ];
  for (const data of cases) {
    const outcome = await host.outcome(handle, Event.fromJson('order.placed', data).withKey('A').withId('e1'));
    assert.equal(outcome.kind, 'fatal', JSON.stringify(data));
    assert.ok('message' in outcome && outcome.message.startsWith('event e1 (order.placed): payload is not the expected JSON: '));
  }
  // v1 allows an email; v2 a warehouse and an email.
  await host.run(handle, restock('A', 5));
  await host.run(handle, Event.fromJson('order.placed', { order_id: 'o1', sku: 'A', qty: 1, email: 'a@b.c' }).withKey('A'));
  const v2 = Event.fromJson('order.placed', { order_id: 'o2', sku: 'A', quantity: 1, warehouse: null, email: 'a@b.c' });
  await host.run(handle, v2.withKey('A').withDataSchema(ORDER_PLACED_V2));
  assert.equal(host.stateJsonOf('A', 'available'), 3);
});

test('restocking with the wrong key or no key is fatal; other types are ignored', async () => {
  const host = new TestHost();
  await assert.rejects(host.run(handle, restock('A', 1).withKey('B')), Fatal);
  await assert.rejects(host.run(handle, Event.fromJson('stock.received', { sku: 'A' }).withKey('A')), Fatal);
  await host.run(handle, Event.fromJson('customer.created', {}).withKey('A'));
  assert.deepEqual(host.logs(), [{ level: 'debug', message: 'ignoring customer.created' }]);
  assert.deepEqual(host.keys(), ['A']);
  assert.deepEqual(host.stateJsonSnapshot('A'), {});
});
