// Component tests: build the probe and hostile fixtures with
// sluice-build-js and run them in the real host with `sluice test`.
//
//     SLUICE_BIN=/path/to/sluice npm run test:component
//
// Skipped when no `sluice` binary is found (SLUICE_BIN, else `sluice` on
// PATH). Building the two fixtures takes about 15 s.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { build } from '../../bin/sluice-build-js.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = resolve(here, '../fixtures');

function findSluice() {
  if (process.env.SLUICE_BIN) return process.env.SLUICE_BIN;
  const which = spawnSync('sh', ['-c', 'command -v sluice'], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() : undefined;
}

const sluice = findSluice();
const skip = sluice ? false : 'no sluice binary (set SLUICE_BIN)';

let work;
const wasm = {};

/** Runs `sluice test` on one event; returns the parsed report. */
function run(name, event, { state, limits } = {}) {
  const eventFile = join(work, 'event.json');
  writeFileSync(eventFile, JSON.stringify(event));
  const args = ['test', wasm[name], '--name', name, '--event', eventFile, '--compact'];
  if (state) {
    const stateFile = join(work, 'state.json');
    writeFileSync(stateFile, JSON.stringify(state));
    args.push('--state', stateFile);
  }
  if (limits) args.push('--limits', JSON.stringify(limits));
  const out = execFileSync(sluice, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  return JSON.parse(out);
}

describe('components in the real host', { skip }, () => {
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'sluice-js-component-test-'));
    for (const name of ['probe', 'hostile']) {
      const { component, imports } = await build({ handler: join(fixtures, name, 'handler.js') });
      assert.ok(!imports.some((i) => i.startsWith('wasi:http')), imports.join(', '));
      wasm[name] = join(work, `${name}.wasm`);
      writeFileSync(wasm[name], component);
    }
  });
  after(() => work && rmSync(work, { recursive: true, force: true }));

  test('event attributes reach the handler', () => {
    const r = run('probe', {
      type: 'attrs', id: 'a1', source: '/src', time: '2026-01-01T00:00:00Z', data_schema: 'urn:x', key: 'k',
      topic: 'tp', attempt: 3, headers: { traceparent: '00-aa-bb-01', 'x-h': 'v' }, data: { a: 1 },
    });
    assert.deepEqual(r.outcome, { kind: 'ok' });
    assert.deepEqual(r.emitted[0].data, {
      id: 'a1', source: '/src', type: 'attrs', time: '2026-01-01T00:00:00Z', contentType: 'application/json',
      dataSchema: 'urn:x', key: 'k', topic: 'tp', attempt: 3, headers: { traceparent: '00-aa-bb-01', 'x-h': 'v' },
      traceparent: '00-aa-bb-01', text: '{"a":1}', bytes: 7,
    });
  });

  test('state, emits, logs and stdio', () => {
    const r = run('probe', { type: 'count', key: 'k' }, { state: { n: 41, gone: true } });
    assert.deepEqual(r.outcome, { kind: 'ok' });
    assert.deepEqual(r.state_writes, { gone: null, n: 42, raw: { $base64: 'AAEC' }, text: { $base64: 'aGVsbG8=' } });
    assert.equal(r.emitted.length, 2);
    assert.equal(r.emitted[0].type, 'counted');
    assert.equal(r.emitted[0].key, 'k');
    assert.equal(r.emitted[0].data_schema, 'urn:probe:v1');
    assert.equal(r.emitted[0].headers['x-probe'], 'yes');
    assert.deepEqual(r.emitted[0].data, { n: 42, keys: ['n', 'raw', 'text'] });
    assert.equal(r.emitted[1].content_type, 'application/octet-stream');
    assert.deepEqual(r.emitted[1].data, { $base64: '/w==' });
    assert.deepEqual(r.logs.map((l) => [l.level, l.stream, l.message]), [
      ['info', 'log', 'counted 42 first id true'],
      ['debug', 'log', '{"deep":{"n":41}}'],
      ['info', 'stdout', 'stdout line'],
      ['warn', 'stderr', 'stderr line'],
    ]);
  });

  test('async handlers are awaited', () => {
    const r = run('probe', { type: 'async' });
    assert.deepEqual(r.outcome, { kind: 'ok' });
    assert.equal(r.emitted[0].type, 'later');
  });

  const outcomes = [
    [{ type: 'fatal', id: 'f1' }, { kind: 'fatal', message: 'nope: f1' }],
    [{ type: 'retryable' }, { kind: 'retryable', message: 'later' }],
    [{ type: 'throw-string' }, { kind: 'retryable', message: 'uncaught exception: a string' }],
    [{ type: 'no-key' }, { kind: 'fatal', message: 'the event has no key, so it has no state' }],
    [{ type: 'invalid-emit' }, { kind: 'fatal', message: 'invalid emit: header "traceparent" is set by the host' }],
    [{ type: 'effects-then-fail', key: 'k' }, { kind: 'retryable', message: 'rolled back' }],
  ];
  for (const [event, outcome] of outcomes) {
    test(`outcome of ${event.type}`, () => {
      const r = run('probe', event);
      assert.deepEqual(r.outcome, outcome);
      assert.deepEqual(r.emitted, []);
      assert.deepEqual(r.state_writes, {});
    });
  }

  test('bad JSON and too-large state are fatal', () => {
    const bad = run('probe', { type: 'bad-json', id: 'b1', data_base64: Buffer.from('not json').toString('base64') });
    assert.equal(bad.outcome.kind, 'fatal');
    assert.match(bad.outcome.message, /^event b1 \(bad-json\): payload is not the expected JSON: /);
    const big = run('probe', { type: 'too-large', key: 'k' });
    assert.equal(big.outcome.kind, 'fatal');
    assert.match(big.outcome.message, /^state too large: /);
  });

  test('a rejected promise is retryable with the stack', () => {
    const r = run('probe', { type: 'async-throw' });
    assert.equal(r.outcome.kind, 'retryable');
    assert.match(r.outcome.message, /^RangeError: async bad\n {4}at handler_default/);
  });

  describe('hostile', () => {
    const limits = { timeout_ms: 500 };
    test('loop times out', () => {
      assert.equal(run('hostile', { type: 'loop' }, { limits }).outcome.kind, 'timeout');
    });
    test('alloc hits the memory limit', () => {
      const o = run('hostile', { type: 'alloc' }, { limits }).outcome;
      assert.equal(o.kind, 'limit');
      assert.equal(o.limit, 'memory');
    });
    test('recurse is a retryable InternalError with collapsed frames', () => {
      const o = run('hostile', { type: 'recurse' }, { limits }).outcome;
      assert.equal(o.kind, 'retryable');
      assert.match(o.message, /^InternalError: too much recursion\n {4}at recurse@\S+ \(\d+ times\)/);
    });
    test('throw is retryable with the message and stack', () => {
      const o = run('hostile', { type: 'throw' }, { limits }).outcome;
      assert.equal(o.kind, 'retryable');
      assert.match(o.message, /^TypeError: .*order\.lines is undefined\n {4}at validate@\S+\n {4}at processOrder@/);
    });
    test('emit hits the emit count limit', () => {
      const o = run('hostile', { type: 'emit' }, { limits }).outcome;
      assert.equal(o.kind, 'limit');
      assert.equal(o.limit, 'emit-count');
    });
  });
});
