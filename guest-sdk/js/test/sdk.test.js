import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Event, Fatal, HandlerError, Retryable, StateError, describeException, handler, handlerOf, outcomeOf } from '@sluice/sdk';
import { TestHost } from '@sluice/sdk/testing';

/** The Rust SDK's TestHost test handler, ported: counts per key, emits, fails on `fail`. */
const counter = handler((event, ctx) => {
  const n = ctx.state.getJson('n') ?? 0;
  ctx.state.setJson('n', n + 1);
  ctx.emit({ topic: 'out', type: 'counted', data: String(n) });
  if (event.type === 'fail') throw new Retryable('boom');
});

describe('Event', () => {
  test('test defaults and builders', () => {
    const e = Event.fromJson('order.placed', { a: 1 })
      .withKey('k')
      .withId('e-9')
      .withTopic('orders')
      .withDataSchema('urn:x:v2')
      .withHeader('TraceParent', 'tp')
      .withAttempt(3);
    assert.equal(e.type, 'order.placed');
    assert.equal(e.id, 'e-9');
    assert.equal(e.source, '/sluice/test');
    assert.equal(e.key, 'k');
    assert.equal(e.topic, 'orders');
    assert.equal(e.contentType, 'application/json');
    assert.equal(e.dataSchema, 'urn:x:v2');
    assert.equal(e.attempt, 3);
    assert.equal(e.header('traceparent'), 'tp');
    assert.equal(e.header('TRACEPARENT'), 'tp');
    assert.equal(e.header('missing'), undefined);
    assert.deepEqual(e.json(), { a: 1 });
    assert.equal(e.text(), '{"a":1}');
    assert.ok(e.data instanceof Uint8Array);
  });

  test('builders copy; events are immutable', () => {
    const a = Event.of('t', 'x');
    const b = a.withKey('k');
    assert.equal(a.key, undefined);
    assert.equal(b.key, 'k');
    assert.throws(() => {
      // @ts-ignore
      a.key = 'z';
    }, TypeError);
    assert.equal(Event.of('t').data.length, 0);
    assert.equal(a.id, 'test-event-1');
    assert.equal(a.attempt, 1);
  });

  test('a payload that is not JSON is fatal', () => {
    const e = Event.of('order.placed', 'not json').withId('e1');
    assert.throws(() => e.json(), (err) => {
      assert.ok(err instanceof Fatal);
      assert.equal(err.kind, 'fatal');
      assert.match(err.message, /^event e1 \(order.placed\): payload is not the expected JSON: /);
      return true;
    });
  });

  test('a payload that is not UTF-8 is fatal', () => {
    const e = Event.of('t', new Uint8Array([0xff, 0xfe]));
    assert.throws(() => e.text(), Fatal);
    assert.throws(() => e.json(), Fatal);
  });
});

describe('errors and outcomes', () => {
  test('Fatal and Retryable', () => {
    const f = new Fatal('bad');
    const r = new Retryable('later', { cause: new Error('x') });
    assert.ok(f instanceof HandlerError && f instanceof Error);
    assert.equal(f.isRetryable, false);
    assert.equal(r.isRetryable, true);
    assert.equal(f.name, 'Fatal');
    assert.equal(r.name, 'Retryable');
    assert.deepEqual(outcomeOf(f), { kind: 'fatal', message: 'bad' });
    assert.deepEqual(outcomeOf(r), { kind: 'retryable', message: 'later' });
    assert.deepEqual(outcomeOf(new StateError('no-key')), {
      kind: 'fatal',
      message: 'the event has no key, so it has no state',
    });
  });

  test('WIT-shaped values are honoured', () => {
    assert.deepEqual(outcomeOf({ tag: 'fatal', val: 'x' }), { kind: 'fatal', message: 'x' });
    assert.deepEqual(outcomeOf({ tag: 'retryable', val: 'y' }), { kind: 'retryable', message: 'y' });
  });

  test('any other exception is retryable with name, message and stack', () => {
    function deepInHandler() {
      throw new TypeError('cannot read x');
    }
    let err;
    try {
      deepInHandler();
    } catch (e) {
      err = e;
    }
    const o = outcomeOf(err);
    assert.equal(o.kind, 'retryable');
    assert.ok('message' in o);
    const lines = o.message.split('\n');
    assert.equal(lines[0], 'TypeError: cannot read x');
    assert.match(lines[1], /^ {4}at deepInHandler /);
    assert.deepEqual(outcomeOf('oops'), { kind: 'retryable', message: 'uncaught exception: oops' });
    assert.deepEqual(outcomeOf({ a: 1 }), { kind: 'retryable', message: 'uncaught exception: {"a":1}' });
    assert.deepEqual(outcomeOf(undefined), { kind: 'retryable', message: 'uncaught exception: undefined' });
  });

  test('SpiderMonkey-style stacks are indented as frames', () => {
    const e = new Error('boom');
    e.stack = 'f@bundle.js:3:9\nexport_handle@/tmp/abc/sources/initializer.js:709:29\n';
    assert.equal(describeException(e), 'Error: boom\n    at f@bundle.js:3:9');
  });

  test('recursion collapses and long stacks are cut', () => {
    const e = new Error('too much recursion');
    e.name = 'InternalError';
    e.stack = 'r@b.js:1:1\n'.repeat(100) + 'h@b.js:9:9\n';
    assert.equal(describeException(e), 'InternalError: too much recursion\n    at r@b.js:1:1 (100 times)\n    at h@b.js:9:9');
    const long = new Error('deep');
    long.stack = Array.from({ length: 40 }, (_, i) => `f${i}@b.js:${i}:1`).join('\n');
    const lines = describeException(long).split('\n');
    assert.equal(lines.length, 1 + 24 + 1);
    assert.equal(lines.at(-1), '    ... 16 more');
  });

  test('handlerOf finds default or handle exports', () => {
    const fn = () => {};
    assert.equal(handlerOf(fn), fn);
    assert.equal(handlerOf({ default: fn }), fn);
    assert.equal(handlerOf({ handle: fn }), fn);
    assert.throws(() => handlerOf({}), TypeError);
  });
});

describe('TestHost', () => {
  test('state is per key and failures roll back', async () => {
    const host = new TestHost();
    await host.run(counter, Event.of('ok').withKey('a'));
    await host.run(counter, Event.of('ok').withKey('a'));
    await assert.rejects(host.run(counter, Event.of('fail').withKey('a')), (e) => e instanceof Retryable);
    await host.run(counter, Event.of('ok').withKey('b'));
    assert.equal(host.stateJsonOf('a', 'n'), 2);
    assert.equal(host.stateJsonOf('b', 'n'), 1);
    assert.equal(host.emitted().length, 3);
    assert.deepEqual(host.keys(), ['a', 'b']);
  });

  test('keyless events have no state', async () => {
    const host = new TestHost();
    await assert.rejects(host.run(counter, Event.of('ok')), (e) => {
      assert.ok(e instanceof StateError);
      assert.ok(e instanceof Fatal);
      assert.equal(e.reason, 'no-key');
      return true;
    });
    assert.deepEqual(await host.outcome(counter, Event.of('ok')), {
      kind: 'fatal',
      message: 'the event has no key, so it has no state',
    });
  });

  test('emit ids are <event id>/<index>; emitJson sets the content type', async () => {
    const host = new TestHost();
    const ids = [];
    await host.run((event, ctx) => {
      ids.push(ctx.emitJson('out', 'a.b', { x: 1 }, { key: 'k1', dataSchema: 'urn:v1', headers: { 'X-Extra': 'v' } }));
      ids.push(ctx.emit({ topic: 'out', type: 'raw', data: new Uint8Array([1, 2]) }));
    }, Event.of('t').withId('ev-7'));
    assert.deepEqual(ids, ['ev-7/0', 'ev-7/1']);
    const [a, b] = host.emitted();
    assert.equal(a.id, 'ev-7/0');
    assert.equal(a.type, 'a.b');
    assert.equal(a.topic, 'out');
    assert.equal(a.key, 'k1');
    assert.equal(a.contentType, 'application/json');
    assert.equal(a.dataSchema, 'urn:v1');
    assert.deepEqual(a.headers, { 'x-extra': 'v' });
    assert.deepEqual(a.json(), { x: 1 });
    assert.deepEqual([...b.data], [1, 2]);
    assert.equal(b.contentType, undefined);
    assert.equal(host.takeEmitted().length, 2);
    assert.equal(host.emitted().length, 0);
  });

  test('invalid emits are fatal', async () => {
    const host = new TestHost();
    const cases = [
      [{ topic: '', type: 't' }, /topic "" is not valid/],
      [{ topic: 'has space', type: 't' }, /topic "has space" is not valid/],
      [{ topic: 'ok', type: ' ' }, /type is empty/],
      [{ topic: 'ok', type: 't', headers: { 'bad name': 'v' } }, /header name "bad name" is not allowed/],
      [{ topic: 'ok', type: 't', headers: { traceparent: 'v' } }, /header "traceparent" is set by the host/],
    ];
    for (const [emit, re] of cases) {
      const o = await host.outcome((_e, ctx) => void ctx.emit(emit), Event.of('x'));
      assert.equal(o.kind, 'fatal');
      assert.ok('message' in o);
      assert.match(o.message, re);
    }
    assert.equal(host.emitted().length, 0);
  });

  test('raw and text state, delete and keys', async () => {
    const host = new TestHost().withState('k', 'raw', new Uint8Array([0, 255])).withStateJson('k', 'j', { a: [1] });
    await host.run((_e, ctx) => {
      assert.deepEqual([...ctx.state.get('raw')], [0, 255]);
      assert.deepEqual(ctx.state.getJson('j'), { a: [1] });
      assert.equal(ctx.state.get('missing'), undefined);
      assert.equal(ctx.state.getJson('missing'), undefined);
      ctx.state.set('t', 'héllo');
      assert.equal(ctx.state.getText('t'), 'héllo');
      assert.throws(() => ctx.state.getJson('raw'), Fatal);
      ctx.state.delete('raw');
      ctx.state.delete('never-set');
      assert.deepEqual(ctx.state.keys(), ['j', 't']);
    }, Event.of('x').withKey('k'));
    assert.equal(host.stateOf('k', 'raw'), undefined);
    assert.deepEqual(host.stateJsonSnapshot('k'), { j: { a: [1] }, t: 'héllo' });
  });

  test('values that do not serialize are fatal', async () => {
    const host = new TestHost();
    const o1 = await host.outcome((_e, ctx) => ctx.state.setJson('n', 10n), Event.of('x').withKey('k'));
    assert.equal(o1.kind, 'fatal');
    const o2 = await host.outcome((_e, ctx) => void ctx.emitJson('t', 'x', undefined), Event.of('x'));
    assert.equal(o2.kind, 'fatal');
  });

  test('writes of a failed call are not visible to the next call; logs are kept', async () => {
    const host = new TestHost().withStateJson('k', 'n', 1);
    const o = await host.outcome((_e, ctx) => {
      ctx.state.setJson('n', 99);
      ctx.state.delete('n');
      ctx.log.info('before the failure', { n: 99 });
      throw new Fatal('stop');
    }, Event.of('x').withKey('k'));
    assert.deepEqual(o, { kind: 'fatal', message: 'stop' });
    assert.equal(host.stateJsonOf('k', 'n'), 1);
    assert.deepEqual(host.logs(), [{ level: 'info', message: 'before the failure {"n":99}' }]);
  });

  test('async handlers, and unexpected exceptions become Retryable with the cause', async () => {
    const host = new TestHost();
    const h = async (_e, ctx) => {
      await Promise.resolve();
      ctx.log.warn('w');
      ctx.log.error(new RangeError('r'));
      null.boom;
    };
    await assert.rejects(host.run(h, Event.of('x')), (e) => {
      assert.ok(e instanceof Retryable);
      assert.ok(e.cause instanceof TypeError);
      assert.match(e.message, /^TypeError: .*null/);
      assert.match(e.message, /\n {4}at h /);
      return true;
    });
    assert.equal(host.logs()[0].level, 'warn');
    assert.match(host.logs()[1].message, /^RangeError: r\n {4}at /);
    await host.run(async () => {}, Event.of('x'));
  });

  test('a module namespace is accepted', async () => {
    const host = new TestHost();
    await host.run({ default: counter }, Event.of('ok').withKey('m'));
    await host.run({ handle: counter }, Event.of('ok').withKey('m'));
    assert.equal(host.stateJsonOf('m', 'n'), 2);
  });

  test('log levels', async () => {
    const host = new TestHost();
    await host.run((_e, ctx) => {
      ctx.log.trace('t');
      ctx.log.debug('d', 1, true);
      ctx.log.info('i');
      ctx.log.at('warn', 'w');
    }, Event.of('x'));
    assert.deepEqual(host.logs(), [
      { level: 'trace', message: 't' },
      { level: 'debug', message: 'd 1 true' },
      { level: 'info', message: 'i' },
      { level: 'warn', message: 'w' },
    ]);
  });
});
