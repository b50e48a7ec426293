import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Event, Fatal } from '@sluice/sdk';
import { TestHost } from '@sluice/sdk/testing';

import handle from '../src/handler.js';

const registered = (data) => Event.fromJson('customer.registered', data).withId('c-1-registered');

test('asks for a welcome email in the customer language', async () => {
  const host = new TestHost();
  await host.run(handle, registered({ customer_id: 'c-1', name: 'Ada', email: 'ada@example.com', locale: 'fr-BE' }));
  const [email] = host.emitted();
  assert.equal(email.id, 'c-1-registered/0');
  assert.equal(email.topic, 'notifications');
  assert.equal(email.type, 'email.requested');
  assert.equal(email.key, 'c-1');
  assert.deepEqual(email.json(), {
    to: 'ada@example.com',
    subject: 'Bienvenue',
    body: 'Bonjour Ada, bienvenue !',
    language: 'fr',
    customer_id: 'c-1',
  });
  assert.deepEqual(host.logs(), [
    { level: 'info', message: 'welcome email (fr) requested for c-1: c-1-registered/0' },
  ]);
  assert.deepEqual(host.keys(), []);
});

test('falls back to English', async () => {
  const host = new TestHost();
  await host.run(handle, registered({ customer_id: 'c-2', name: 'Bo', email: 'bo@example.com', locale: 'xx' }));
  await host.run(handle, registered({ customer_id: 'c-3', name: 'Cy', email: 'cy@example.com' }));
  assert.deepEqual(host.emitted().map((e) => e.json().subject), ['Welcome', 'Welcome']);
});

test('bad payloads are fatal and emit nothing; other types are ignored', async () => {
  const host = new TestHost();
  for (const data of [[], { name: 'Ada', email: 'a@b' }, { customer_id: 'c', name: ' ', email: 'a@b' }, { customer_id: 'c', name: 'A', email: 'nope' }]) {
    await assert.rejects(host.run(handle, registered(data)), Fatal);
  }
  await assert.rejects(host.run(handle, Event.of('customer.registered', '{')), Fatal);
  await host.run(handle, Event.fromJson('customer.deleted', {}));
  assert.equal(host.emitted().length, 0);
  assert.deepEqual(host.logs().at(-1), { level: 'debug', message: 'ignoring customer.deleted' });
});
