// Runs before `npm run build` and `npm test`: installs the SDK's own
// dependencies (its build tools: npm links a `file:` dependency but does
// not install that package's dependencies) and then this project's, each
// when missing or older than its package files.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const manifest = JSON.parse(readFileSync('package.json', 'utf8'));
const sdk = resolve(manifest.dependencies['@sluice/sdk'].replace(/^file:/, ''));

/** Whether `dir`'s node_modules is missing or older than any of `inputs`. */
function stale(dir, inputs) {
  const installed = join(dir, 'node_modules', '.package-lock.json');
  if (!existsSync(installed)) return true;
  const at = statSync(installed).mtimeMs;
  return inputs.some((f) => existsSync(join(dir, f)) && statSync(join(dir, f)).mtimeMs > at);
}

function npm(dir, args) {
  console.error(`> (cd ${dir} && npm ${args.join(' ')})`);
  // Inside `npm run`, npm_execpath is the npm that runs us.
  const [cmd, pre] = process.env.npm_execpath ? [process.execPath, [process.env.npm_execpath]] : ['npm', []];
  const run = spawnSync(cmd, [...pre, ...args], { cwd: dir, stdio: 'inherit', shell: process.platform === 'win32' && !pre.length });
  if (run.status !== 0) {
    console.error(`npm ${args.join(' ')} failed in ${dir}`);
    process.exit(run.status ?? 1);
  }
}

if (!existsSync(join(sdk, 'package.json'))) {
  console.error(`the Sluice JS SDK is not at ${sdk} (the @sluice/sdk path in package.json)`);
  process.exit(1);
}
if (stale(sdk, ['package.json', 'package-lock.json'])) npm(sdk, ['ci', '--no-audit', '--no-fund']);
if (stale('.', ['package.json', 'package-lock.json'])) npm('.', ['install', '--no-audit', '--no-fund']);
