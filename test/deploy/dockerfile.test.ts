// The Dockerfile, checked without a Docker engine (this machine has none): every path it COPYs
// from the build context exists, the entrypoint's roles run files that package.json's bin entries
// name, the ports and health check are declared, and a production install (what the build stage
// runs) builds the native addon and the hardware CRC32C from a clean directory.
import t from 'tap';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, runCommand } from '../fixtures/exec.js';

interface Instruction {
  readonly op: string;
  readonly args: string;
  readonly stage: number;
}

/** Joins continuation lines and drops comments: one entry per instruction, with its stage index. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  let pending = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    pending += raw.replace(/\\\s*$/, ' ');
    if (/\\\s*$/.test(raw)) continue;
    const line = pending.trim();
    pending = '';
    if (line === '') continue;
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (m === null) throw new Error(`cannot parse Dockerfile line: ${line}`);
    const op = m[1]!.toUpperCase();
    if (op === 'FROM') stage++;
    out.push({ op, args: m[2]!, stage });
  }
  return out;
}

const dockerfile = parseDockerfile(readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8'));
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };
const entrypoint = readFileSync(join(REPO_ROOT, 'scripts', 'container-entrypoint.sh'), 'utf8');

t.test('multi-stage: a build stage and a slim runtime stage', async (t) => {
  const froms = dockerfile.filter((i) => i.op === 'FROM');
  t.equal(froms.length, 2);
  t.match(froms[0]!.args, /^node:20\S* AS build$/i, 'the build stage has the toolchain');
  t.match(froms[1]!.args, /^node:20-\S*slim$/, 'the runtime is a slim Node image');
  const runtime = dockerfile.filter((i) => i.stage === 1);
  t.notOk(runtime.some((i) => i.op === 'RUN' && /npm (ci|install)|node-gyp|apt-get/.test(i.args)), 'nothing is compiled or installed in the runtime stage');
  const user = runtime.find((i) => i.op === 'USER');
  t.ok(user !== undefined && user.args !== 'root' && user.args !== '0', `runtime user: ${user?.args}`);
});

t.test('every COPY source from the build context exists; runtime copies come from the build stage', async (t) => {
  const copies = dockerfile.filter((i) => i.op === 'COPY');
  t.ok(copies.length > 5);
  for (const c of copies) {
    const words = c.args.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='));
    const paths = words.filter((w) => !w.startsWith('--'));
    const sources = paths.slice(0, -1);
    if (from !== undefined) {
      t.equal(from, '--from=build', `${c.args}: copied from the build stage`);
      continue;
    }
    for (const s of sources) t.ok(existsSync(join(REPO_ROOT, s)), `COPY ${s}: exists in the build context`);
  }
  const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
  for (const p of ['node_modules', 'dist', 'build']) t.ok(ignored.includes(p), `.dockerignore keeps the host's ${p} out of the context`);
});

t.test('ports, health check and entrypoint', async (t) => {
  const exposed = dockerfile.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/)).map(Number);
  for (const port of [3260, 6060, 9500]) t.ok(exposed.includes(port), `EXPOSE ${port}`);
  const health = dockerfile.find((i) => i.op === 'HEALTHCHECK');
  t.match(health?.args, /\/healthz/, 'HEALTHCHECK asks the liveness endpoint');
  const ep = dockerfile.find((i) => i.op === 'ENTRYPOINT');
  t.ok(ep !== undefined);
  const epPath = (JSON.parse(ep!.args) as string[])[0]!;
  const installed = dockerfile.find((i) => i.op === 'COPY' && i.args.endsWith(` ${epPath}`));
  t.ok(installed, `the entrypoint ${epPath} is COPYed into the image`);

  // Each role runs a file that a bin entry of package.json names (the same programs `npm start` runs).
  const roles = [...entrypoint.matchAll(/^\s*(\w+)\)\s+exec node \/app\/(\S+)/gm)].map((m) => ({ role: m[1]!, file: m[2]! }));
  t.same(roles.map((r) => r.role).sort(), ['ctl', 'replica', 'target', 'verify']);
  const bins = new Set(Object.values(pkg.bin).map((b) => b.replace(/^\.\//, '')));
  for (const r of roles) {
    t.ok(bins.has(r.file), `role ${r.role} runs ${r.file}, a bin entry of package.json`);
    t.ok(existsSync(join(REPO_ROOT, r.file.replace(/^dist\//, '').replace(/\.js$/, '.ts'))), `${r.file} is compiled from src/`);
  }
  const cmd = dockerfile.find((i) => i.op === 'CMD');
  t.same(JSON.parse(cmd!.args), ['target'], 'the default role is the target');
  // The build stage compiles with the same script a developer uses.
  t.ok(dockerfile.some((i) => i.stage === 0 && i.op === 'RUN' && i.args.includes('npm run build')), 'RUN npm run build');
  t.ok(pkg.scripts['build'] !== undefined);
});

t.test('the entrypoint refuses an unknown role with a clear message', async (t) => {
  const r = await runCommand('sh', [join(REPO_ROOT, 'scripts', 'container-entrypoint.sh'), 'bogus'], { timeoutMs: 10_000, t });
  t.equal(r.code, 64);
  t.match(r.stderr, /unknown role 'bogus'/);
});

t.test('a production install from a clean directory builds the addon and the hardware CRC32C', { timeout: 300_000 }, async (t) => {
  // What the build stage's `npm ci` + `npm prune --omit=dev` leave behind, reproduced with
  // `npm ci --omit=dev` (install scripts run the same way) in a directory holding only what the
  // Dockerfile copies before it.
  const dir = t.testdir();
  for (const f of ['package.json', 'package-lock.json', 'binding.gyp']) cpSync(join(REPO_ROOT, f), join(dir, f));
  cpSync(join(REPO_ROOT, 'native'), join(dir, 'native'), { recursive: true });
  mkdirSync(join(dir, 'home'));
  const r = await runCommand('npm', ['ci', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund'], {
    cwd: dir, timeoutMs: 280_000, t, env: { CI: 'true' },
  });
  t.equal(r.code, 0, 'npm ci --omit=dev', { stderr: r.stderr.slice(-3000) });
  t.ok(existsSync(join(dir, 'build', 'Release', 'blockio.node')), 'the O_DIRECT addon was built');
  t.notOk(existsSync(join(dir, 'node_modules', 'tap')), 'no dev dependencies');
  const check = await runCommand(process.execPath, ['-e', `
    const { createRequire } = require('node:module');
    const req = createRequire(${JSON.stringify(join(dir, 'package.json'))});
    const addon = req(${JSON.stringify(join(dir, 'build', 'Release', 'blockio.node'))});
    if (typeof addon !== 'object') throw new Error('addon did not load');
    // fast-crc32c takes the first implementation that loads: the hardware one unless sse4_crc32 failed to build.
    if (req('fast-crc32c') !== req('fast-crc32c/impls/sse4_crc32c')) throw new Error('fast-crc32c fell back to its JS implementation');
    console.log('loaded', Object.keys(addon).length, 'exports');
  `], { timeoutMs: 30_000, t, cwd: dir });
  t.equal(check.code, 0, 'the addon and sse4_crc32 load', { stdout: check.stdout, stderr: check.stderr.slice(-2000) });
});
