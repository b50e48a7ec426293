// Unit tests of the handler with the SDK's in-memory TestHost.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Event, Fatal } from '@sluice/sdk';
import { TestHost } from '@sluice/sdk/testing';

import handle from '../src/handler.ts';

test('greets and counts', async () => {
  const host = new TestHost();
  const event = Event.fromJson('greet.requested', { name: 'Ada' }).withKey('u1');
  await host.run(handle, event);
  await host.run(handle, event.withId('second'));
  const emitted = host.emitted();
  assert.equal(emitted.length, 2);
  assert.equal(emitted[1].topic, 'greetings');
  assert.equal(emitted[1].type, 'greeting.sent');
  assert.equal(emitted[1].key, 'u1');
  assert.deepEqual(emitted[1].json(), { message: 'Hello again, Ada! (2)', count: 2 });
  assert.equal(host.stateJsonOf('u1', 'count'), 2);
});

test('a payload without name is fatal', async () => {
  const host = new TestHost();
  const event = Event.fromJson('greet.requested', {}).withKey('u1');
  await assert.rejects(host.run(handle, event), Fatal);
  assert.equal(host.emitted().length, 0);
});
