#!/usr/bin/env node
// Regenerates src/wit/ (the guest-side TypeScript declarations of the
// `sluice:handler` world, as componentize-js sees its imports and exports)
// from the repository's wit/ with jco's type generator:
//
//     npm run gen-types            (from guest-sdk/js)
//
// It is `jco guest-types ../../wit -n handler -o src/wit`, run through
// jco-transpile's API because the jco 1.35.0 CLI gives its WASI filesystem
// shim (preview2-shim 0.26.1) no preopened directory, so it cannot read any
// WIT path ("failed to read path for WIT ... No such file or directory").
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const sdk = resolve(here, '..');
const wit = resolve(sdk, '../../wit');
const out = join(sdk, 'src/wit');

const require = createRequire(import.meta.url);
const transpileMain = require.resolve('@bytecodealliance/jco-transpile');
const shimFs = createRequire(transpileMain).resolve('@bytecodealliance/preview2-shim/filesystem');
const { _setPreopens } = await import(pathToFileURL(shimFs).href);
_setPreopens({ '/': '/' });

const { generateGuestTypes } = await import('@bytecodealliance/jco-transpile');
const files = await generateGuestTypes(wit, { worldName: 'handler' });

await rm(out, { recursive: true, force: true });
for (const [name, bytes] of Object.entries(files)) {
  const path = join(out, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
  console.log(`wrote ${path.slice(sdk.length + 1)}`);
}
