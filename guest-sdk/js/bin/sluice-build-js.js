#!/usr/bin/env node
// sluice-build-js: bundle a JS/TS handler with the SDK and turn it into a
// Sluice handler component.
//
//     sluice-build-js src/handler.ts -o handler.wasm [--wit DIR] [--bundle FILE]
//
// 1. esbuild bundles the handler module, the SDK and its component entry
//    into one ES module (componentize-js takes exactly one), leaving the
//    `sluice:*` / `wasi:*` WIT imports external.
// 2. componentize-js turns it into a component of the `handler` world of
//    the repository's wit/, with the `http` and `fetch-event` engine
//    features disabled: they import wasi:http, which the Sluice host does
//    not provide, so a component with them would not load.
// 3. The component's imports are checked against what the host links
//    (sluice:handler and WASI 0.2 cli/clocks/random/io/filesystem/sockets).
import { realpathSync } from 'node:fs';
import { copyFile, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const sdk = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Engine features to turn off: each pulls imports the host lacks. */
export const DISABLED_FEATURES = ['http', 'fetch-event'];

/** Import namespaces the Sluice host links. */
const ALLOWED_IMPORTS = [
  /^sluice:handler\/(types|outbox|state|log)@/,
  /^wasi:(cli|clocks|random|io|filesystem|sockets)\//,
];

const usage = `usage: sluice-build-js HANDLER.(js|ts) -o OUT.wasm [options]

Bundles HANDLER (which must \`export default handler(...)\` or
\`export function handle(event, ctx)\`) with @sluice/sdk and componentizes it
for the sluice:handler world.

options:
  -o, --out FILE     the component to write (required)
      --wit DIR      WIT directory (default: the repository's wit/, ${resolve(sdk, '../../wit')})
      --bundle FILE  also keep the bundled ES module at FILE
      --no-check     do not check the component's imports
  -q, --quiet        print nothing but errors
  -h, --help`;

/** @param {Uint8Array} component */
export async function componentImports(component) {
  const { componentWit } = await import('@bytecodealliance/jco-transpile/wasm-tools');
  const wit = await componentWit(component);
  const imports = [];
  for (const m of wit.matchAll(/^\s*import\s+([^;\s]+)\s*;/gm)) imports.push(m[1]);
  return imports;
}

/**
 * Builds a component from a handler module. Returns the component bytes,
 * its imports and timings.
 * @param {{ handler: string, wit?: string, bundle?: string, check?: boolean }} opts
 */
export async function build(opts) {
  const handlerPath = resolve(opts.handler);
  const witPath = resolve(opts.wit ?? join(sdk, '../../wit'));
  const t0 = performance.now();

  const esbuild = await import('esbuild');
  const work = await mkdtemp(join(tmpdir(), 'sluice-build-js-'));
  try {
    const bundlePath = join(work, `${basename(handlerPath).replace(/\.[cm]?[jt]s$/, '')}.bundle.js`);
    const entry = [
      `import * as user from ${JSON.stringify(handlerPath)};`,
      `import { exportHandler } from ${JSON.stringify(join(sdk, 'src/component.js'))};`,
      `export const handle = exportHandler(user);`,
    ].join('\n');
    await esbuild.build({
      stdin: { contents: entry, resolveDir: dirname(handlerPath), sourcefile: 'sluice-entry.js', loader: 'js' },
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      mainFields: ['module', 'main'],
      external: ['sluice:*', 'wasi:*'],
      define: { 'process.env.NODE_ENV': '"production"' },
      keepNames: true,
      legalComments: 'none',
      logLevel: 'warning',
      outfile: bundlePath,
    });
    const t1 = performance.now();
    if (opts.bundle) {
      await copyFile(bundlePath, resolve(opts.bundle));
    }

    const { componentize } = await import('@bytecodealliance/componentize-js');
    const { component } = await componentize({
      sourcePath: bundlePath,
      witPath,
      worldName: 'handler',
      disableFeatures: DISABLED_FEATURES,
    });
    const t2 = performance.now();

    const imports = await componentImports(component);
    if (opts.check !== false) {
      const refused = imports.filter((i) => !ALLOWED_IMPORTS.some((re) => re.test(i)));
      if (refused.length > 0) {
        throw new Error(`the component imports what the Sluice host does not provide: ${refused.join(', ')}`);
      }
    }
    return {
      component,
      imports,
      timings: { bundleMs: t1 - t0, componentizeMs: t2 - t1, totalMs: performance.now() - t0 },
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        out: { type: 'string', short: 'o' },
        wit: { type: 'string' },
        bundle: { type: 'string' },
        'no-check': { type: 'boolean' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : e}\n\n${usage}`);
    process.exit(2);
  }
  const { values, positionals } = args;
  if (values.help) {
    console.log(usage);
    return;
  }
  if (positionals.length !== 1 || !values.out) {
    console.error(usage);
    process.exit(2);
  }
  const out = resolve(values.out);
  const result = await build({
    handler: positionals[0],
    wit: values.wit,
    bundle: values.bundle,
    check: !values['no-check'],
  });
  await writeFile(out, result.component);
  if (!values.quiet) {
    const size = (await stat(out)).size;
    const t = result.timings;
    console.log(
      `built ${basename(out)}: ${(size / 1048576).toFixed(1)} MiB in ${(t.totalMs / 1000).toFixed(1)} s ` +
        `(bundle ${Math.round(t.bundleMs)} ms, componentize ${(t.componentizeMs / 1000).toFixed(1)} s)`,
    );
    console.log(`imports: ${result.imports.join(', ')}`);
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`sluice-build-js: ${e instanceof Error ? e.message : e}`);
    if (e?.code === 'ERR_MODULE_NOT_FOUND') {
      console.error(`sluice-build-js: the SDK's build tools are not installed: run \`npm ci\` in ${sdk}`);
    }
    process.exit(1);
  });
}
