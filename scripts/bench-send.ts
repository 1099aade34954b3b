/**
 * Send benchmark: tsbtrfs `send` from the unmounted image against the
 * kernel's `btrfs send` from a mount, side by side.
 *
 *   npm run bench:send -- [--files N] [--big M] [--big-mib S] [--many F] [--changed C]
 *       [--proto 1|2] [--runs R] [--warm] [--work DIR] [--keep]
 *
 * Builds one kernel image holding
 *  - subvolume `tree`: N small files (default 5000, 0..64 KiB, in
 *    directories of 100) and M big random files of S MiB (default 3 x 256),
 *    snapshotted read-only as `tree-snap`;
 *  - subvolume `many`: F files (default 100000) snapshotted as `many-0`,
 *    then C of them changed (default 10) and snapshotted as `many-1`.
 * Then, caches dropped before each timed step (unless --warm):
 *  1. full send of tree-snap: `btrfs send -f /dev/null` from a read-only
 *     mount, against `tsbtrfs send IMG /tree-snap -f /dev/null` (a new
 *     process: start-up included) and the same send in-process (open +
 *     send, start-up excluded); ratio tsbtrfs/kernel, target <= 1.5;
 *  2. incremental send many-0 -> many-1: the in-process time of the send
 *     (tree comparison + stream; target < 100 ms), the same with the image
 *     opened, and the CLI's wall time including node's start-up; the
 *     kernel's `btrfs send -p` for reference.
 *  3. receive of the kernel's full stream of tree-snap into a fresh image:
 *     `btrfs receive` on a kernel mount (plus sync) against `tsbtrfs
 *     receive` into an image tsbtrfs made (a new process; its peak RSS).
 * Stream sizes are printed beside each other (and the incremental's ratio)
 * so a fast run cannot be an empty one. Needs root, loop devices and btrfs in the kernel.
 */
import { promises as fsp, createWriteStream } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Filesystem } from '../src/fs/filesystem.js';
import { send } from '../src/send/index.js';
import { mkfs, withMount, runOk, sh, nativeAvailable } from '../test/helpers/kernel.js';

interface Opts {
  files: number;
  big: number;
  bigMiB: number;
  many: number;
  changed: number;
  proto: 1 | 2;
  runs: number;
  warm: boolean;
  work?: string;
  keep: boolean;
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`bench-send: ${msg}\n`);
  process.stderr.write('usage: node dist/scripts/bench-send.js [--files N] [--big M] [--big-mib S] [--many F] [--changed C] [--proto 1|2] [--runs R] [--warm] [--work DIR] [--keep]\n');
  process.exit(2);
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { files: 5000, big: 3, bigMiB: 256, many: 100_000, changed: 10, proto: 1, runs: 1, warm: false, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isInteger(n) || n < 0) usage(`${a} needs a non-negative integer`);
      return n;
    };
    switch (a) {
      case '--files': o.files = num(); break;
      case '--big': o.big = num(); break;
      case '--big-mib': o.bigMiB = num(); break;
      case '--many': o.many = num(); break;
      case '--changed': o.changed = num(); break;
      case '--proto': {
        const p = num();
        if (p !== 1 && p !== 2) usage('--proto is 1 or 2');
        o.proto = p;
        break;
      }
      case '--runs': o.runs = Math.max(1, num()); break;
      case '--warm': o.warm = true; break;
      case '--work': o.work = argv[++i] ?? usage('--work needs a value'); break;
      case '--keep': o.keep = true; break;
      case '-h': case '--help': usage();
      default: usage(`unknown argument ${a}`);
    }
  }
  return o;
}

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const fmt = (x: number): string => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);

interface ChildResult { openMs: number; sendMs: number; bytes: number; commands: number; diffBlocks: number; sharedSubtrees: number; maxRssKiB: number }

/** Child mode: open the image, send (to /dev/null), report the two times. */
async function child(img: string, snap: string, parent: string, proto: number): Promise<void> {
  const t0 = process.hrtime.bigint();
  const fs = await Filesystem.open(img);
  const subvol = async (p: string): Promise<bigint> => (await fs.resolve(p)).subvol;
  const snapshot = await subvol(snap);
  const par = parent === '-' ? undefined : await subvol(parent);
  const openMs = ms(t0);
  const t1 = process.hrtime.bigint();
  const st = await send(fs, { snapshot, parent: par, out: createWriteStream('/dev/null'), proto: proto as 1 | 2 });
  const sendMs = ms(t1);
  await fs.close();
  const r: ChildResult = { openMs, sendMs, bytes: st.bytes, commands: st.commands, diffBlocks: st.diffBlocks, sharedSubtrees: st.sharedSubtrees, maxRssKiB: process.resourceUsage().maxRSS };
  process.stdout.write(JSON.stringify(r) + '\n');
}

/** Runs a command, timing its wall clock; with captureErr its stderr is returned instead of shown. */
function spawnTimed(cmd: string, args: string[], captureErr = false): Promise<{ wallMs: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', captureErr ? 'pipe' : 'inherit'] });
    let out = '';
    let err = '';
    c.stdout!.setEncoding('utf8');
    c.stdout!.on('data', (d: string) => { out += d; });
    c.stderr?.setEncoding('utf8');
    c.stderr?.on('data', (d: string) => { err += d; });
    c.on('error', reject);
    c.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}${err ? `: ${err.trim()}` : ''}`));
      resolve({ wallMs: ms(t0), stdout: out, stderr: err });
    });
  });
}

async function runChild(img: string, snap: string, parent: string | undefined, proto: number): Promise<ChildResult> {
  const r = await spawnTimed(process.execPath, [fileURLToPath(import.meta.url), '--child', img, snap, parent ?? '-', String(proto)]);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1]!, argv[2]!, argv[3]!, Number(argv[4]));
  const o = parseArgs(argv);
  const st = await nativeAvailable();
  if (!st.ok) throw new Error(`needs the native kernel tier (root, loop devices, btrfs): ${st.reason}`);
  const work = o.work ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-bench-send-')));
  await fsp.mkdir(work, { recursive: true });
  const img = path.join(work, 'bench.img');
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const drop = async (): Promise<void> => {
    if (!o.warm) await sh('sync; echo 3 > /proc/sys/vm/drop_caches');
  };
  try {
    // ------------------------------------------------------------ the image
    const bigBytes = o.big * o.bigMiB * 1048576;
    const imgSize = Math.ceil((bigBytes * 1.2 + o.files * 48 * 1024 + o.many * 6 * 1024 + (1536 << 20)) / 1048576) * 1048576;
    console.log(`image: ${o.files} files + ${o.big} x ${o.bigMiB} MiB in 'tree', ${o.many} files in 'many' (${o.changed} changed); ${(imgSize / 1048576).toFixed(0)} MiB sparse`);
    await mkfs(img, imgSize, []);
    const tb = Date.now();
    await withMount(img, { options: ['subvolid=5'] }, async (mnt) => {
      await runOk('btrfs', ['-q', 'subvolume', 'create', path.join(mnt, 'tree')]);
      await runOk('btrfs', ['-q', 'subvolume', 'create', path.join(mnt, 'many')]);
      await runOk('python3', ['-c', `
import os, random
random.seed(1)
root = ${JSON.stringify(path.join(mnt, 'tree'))}
for i in range(${o.files}):
    d = os.path.join(root, 'd%03d' % (i // 100))
    if i % 100 == 0: os.makedirs(d, exist_ok=True)
    n = random.choice([0, 100, 700, 3000, 5000, 20000, 65536])
    with open(os.path.join(d, 'f%05d' % i), 'wb') as f: f.write(os.urandom(random.randint(0, n)))
root = ${JSON.stringify(path.join(mnt, 'many'))}
for i in range(${o.many}):
    d = os.path.join(root, 'd%04d' % (i // 100))
    if i % 100 == 0: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'f%06d' % i), 'w') as f: f.write('file %d\\n' % i)
`]);
      for (let i = 0; i < o.big; i++) {
        await runOk('dd', ['if=/dev/urandom', `of=${path.join(mnt, 'tree', `big${i}.bin`)}`, 'bs=1M', `count=${o.bigMiB}`, 'status=none']);
      }
      await runOk('btrfs', ['filesystem', 'sync', mnt]);
      await runOk('btrfs', ['-q', 'subvolume', 'snapshot', '-r', path.join(mnt, 'tree'), path.join(mnt, 'tree-snap')]);
      await runOk('btrfs', ['-q', 'subvolume', 'snapshot', '-r', path.join(mnt, 'many'), path.join(mnt, 'many-0')]);
      await runOk('python3', ['-c', `
import os, random
random.seed(2)
root = ${JSON.stringify(path.join(mnt, 'many'))}
for i in random.sample(range(${o.many}), ${Math.min(o.changed, o.many)}):
    with open(os.path.join(root, 'd%04d' % (i // 100), 'f%06d' % i), 'a') as f: f.write('changed\\n')
`]);
      await runOk('btrfs', ['filesystem', 'sync', mnt]);
      await runOk('btrfs', ['-q', 'subvolume', 'snapshot', '-r', path.join(mnt, 'many'), path.join(mnt, 'many-1')]);
    });
    console.log(`image built in ${((Date.now() - tb) / 1000).toFixed(1)} s; caches ${o.warm ? 'warm' : 'dropped before each timed step'}, protocol ${o.proto}\n`);

    const kernelSend = async (args: string[], keepAs?: string): Promise<{ ms: number; bytes: number }> => {
      const out = keepAs ?? path.join(work, 'kernel.stream');
      const wall = await withMount(img, { readonly: true, options: ['subvolid=5'] }, async (mnt) => {
        await drop();
        const r = await spawnTimed('btrfs', ['send', '-q', '--proto', String(o.proto), ...args.map((a) => (a.startsWith('/') ? path.join(mnt, a) : a)), '-f', out]);
        return r.wallMs;
      });
      const bytes = (await fsp.stat(out)).size;
      if (!keepAs) await fsp.rm(out);
      return { ms: wall, bytes };
    };

    // Receive of one stream (the kernel's full send of tree-snap) into a
    // fresh image: `btrfs receive` on a kernel mount, synced, against
    // `tsbtrfs receive` (a new process, commit included) into an image
    // tsbtrfs made. Both images have the same size.
    const receiveBoth = async (stream: string): Promise<{ kernelMs: number; oursMs: number; rssKiB: number }> => {
      const kimg = path.join(work, 'recv-kernel.img');
      const oimg = path.join(work, 'recv-ours.img');
      try {
        await mkfs(kimg, imgSize, []);
        const kernelMs = await withMount(kimg, {}, async (mnt) => {
          await drop();
          const t0 = process.hrtime.bigint();
          await runOk('btrfs', ['receive', '-q', '-f', stream, mnt]);
          await runOk('sync', ['-f', mnt]);
          return ms(t0);
        });
        await fsp.rm(kimg);
        await spawnTimed(process.execPath, [cli, 'mkfs', oimg, '-s', String(imgSize)]);
        await drop();
        const r = await spawnTimed('/usr/bin/time', ['-f', '%M', process.execPath, cli, 'receive', '-q', oimg, '/', '-f', stream], true);
        const rssKiB = Number(r.stderr.trim().split('\n').pop());
        return { kernelMs, oursMs: r.wallMs, rssKiB };
      } finally {
        await fsp.rm(kimg, { force: true });
        await fsp.rm(oimg, { force: true });
      }
    };

    for (let run = 1; run <= o.runs; run++) {
      if (o.runs > 1) console.log(`run ${run}`);
      // ------------------------------------------------------------ 1. full send
      const fullStream = path.join(work, 'full.stream');
      const k = await kernelSend(['/tree-snap'], fullStream);
      await drop();
      const cliRun = await spawnTimed(process.execPath, [cli, 'send', img, '/tree-snap', '--proto', String(o.proto), '-f', '/dev/null']);
      await drop();
      const ours = await runChild(img, '/tree-snap', undefined, o.proto);
      const inProc = ours.openMs + ours.sendMs;
      console.log('full send of tree-snap:');
      console.log(`  kernel  btrfs send          ${fmt(k.ms).padStart(10)}   stream ${k.bytes} bytes`);
      console.log(`  tsbtrfs send (CLI, process) ${fmt(cliRun.wallMs).padStart(10)}   ratio ${(cliRun.wallMs / k.ms).toFixed(2)}x`);
      console.log(`  tsbtrfs send (in-process)   ${fmt(inProc).padStart(10)}   ratio ${(inProc / k.ms).toFixed(2)}x (target <= 1.5x)   stream ${ours.bytes} bytes, ${ours.commands} commands, peak RSS ${(ours.maxRssKiB / 1024).toFixed(0)} MiB`);

      // ------------------------------------------------------------ 2. incremental send
      const ki = await kernelSend(['-p', '/many-0', '/many-1']);
      await drop();
      const inc = await runChild(img, '/many-1', '/many-0', o.proto);
      await drop();
      const incCli = await spawnTimed(process.execPath, [cli, 'send', img, '/many-1', '-p', '/many-0', '--proto', String(o.proto), '-f', '/dev/null']);
      await drop();
      // the same with the image's blocks cached by an earlier open: what a long-lived process sees
      const warmInc = await runChildWarm(img, o.proto);
      console.log(`incremental send many-0 -> many-1 (${o.many} files, ${o.changed} changed):`);
      console.log(`  kernel  btrfs send -p              ${fmt(ki.ms).padStart(10)}   stream ${ki.bytes} bytes`);
      console.log(`  tsbtrfs diff + stream (in-process) ${fmt(inc.sendMs).padStart(10)}   (target < 100 ms; ${inc.diffBlocks} blocks compared, ${inc.sharedSubtrees} shared subtrees skipped)   stream ${inc.bytes} bytes, ${inc.commands} commands`);
      console.log(`  tsbtrfs diff + stream, 2nd send    ${fmt(warmInc).padStart(10)}   (same process, filesystem already open)`);
      console.log(`  tsbtrfs open + diff + stream       ${fmt(inc.openMs + inc.sendMs).padStart(10)}`);
      console.log(`  tsbtrfs CLI incl. node start-up    ${fmt(incCli.wallMs).padStart(10)}`);
      console.log(`  stream size tsbtrfs/kernel         ${(inc.bytes / ki.bytes).toFixed(2)}x   (the same change sent by both)`);

      // ------------------------------------------------------------ 3. receive
      const rc = await receiveBoth(fullStream);
      await fsp.rm(fullStream);
      console.log(`receive of the kernel's full stream of tree-snap (${k.bytes} bytes) into a fresh image:`);
      console.log(`  kernel  btrfs receive + sync       ${fmt(rc.kernelMs).padStart(10)}`);
      console.log(`  tsbtrfs receive (CLI, process)     ${fmt(rc.oursMs).padStart(10)}   ratio ${(rc.oursMs / rc.kernelMs).toFixed(2)}x   peak RSS ${(rc.rssKiB / 1024).toFixed(0)} MiB`);
    }
  } finally {
    if (!o.keep) await fsp.rm(work, { recursive: true, force: true });
    else console.log(`kept ${work}`);
  }
}

/** The incremental send twice in one child; the second time, as a long-lived process would see it. */
async function runChildWarm(img: string, proto: number): Promise<number> {
  const script = `
    import { Filesystem } from ${JSON.stringify(new URL('../src/fs/filesystem.js', import.meta.url).href)};
    import { send } from ${JSON.stringify(new URL('../src/send/index.js', import.meta.url).href)};
    import { createWriteStream } from 'node:fs';
    const fs = await Filesystem.open(${JSON.stringify(img)});
    const id = async (p) => (await fs.resolve(p)).subvol;
    const a = await id('/many-0'); const b = await id('/many-1');
    await send(fs, { snapshot: b, parent: a, out: createWriteStream('/dev/null'), proto: ${proto} });
    const t = process.hrtime.bigint();
    await send(fs, { snapshot: b, parent: a, out: createWriteStream('/dev/null'), proto: ${proto} });
    console.log(Number(process.hrtime.bigint() - t) / 1e6);
    await fs.close();`;
  const r = await spawnTimed(process.execPath, ['--input-type=module', '-e', script]);
  return Number(r.stdout.trim().split('\n').pop());
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
