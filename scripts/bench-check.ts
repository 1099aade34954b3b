/**
 * Check benchmark: `tsbtrfs check` against `btrfs check --readonly` on the same image.
 *
 *   npm run build && node dist/scripts/bench-check.js [--files N] [--snapshots S] [--runs R]
 *       [--size-mib M] [--image PATH] [--work DIR] [--keep]
 *
 * Makes a kernel image (mkfs.btrfs on a sparse file, mounted with compress=zstd)
 * holding N files (default 300000) in nested directories: mostly small files
 * (a third inline), some of 64-128 KiB, symlinks, hard links (every 40th file),
 * xattrs (every 25th), then S snapshots (default 3) taken between rounds of
 * changes so that trees share blocks and diverge. With --image, an existing
 * image is used instead (and kept).
 *
 * Then, warm cache (one untimed run of each first), R times each (default 3):
 *
 *   btrfs check --readonly IMAGE
 *   node dist/src/cli/main.js check IMAGE
 *
 * and prints the median times, the ratio tsbtrfs/btrfs-check and tsbtrfs'
 * peak RSS (from /usr/bin/time when present, else from the child's own
 * report). Both must find the image clean, or the benchmark fails. Needs
 * root, loop devices and btrfs in the kernel to build an image.
 */
import { promises as fsp, existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkfs, withMount, runOk, nativeAvailable } from '../test/helpers/kernel.js';

interface Opts { files: number; snapshots: number; runs: number; sizeMiB: number; image?: string; work?: string; keep: boolean }

function usage(msg?: string): never {
  if (msg) process.stderr.write(`bench-check: ${msg}\n`);
  process.stderr.write('usage: node dist/scripts/bench-check.js [--files N] [--snapshots S] [--runs R] [--size-mib M] [--image PATH] [--work DIR] [--keep]\n');
  process.exit(2);
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { files: 300000, snapshots: 3, runs: 3, sizeMiB: 8192, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => argv[++i] ?? usage(`${a} needs a value`);
    const num = (): number => {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 0) usage(`${a} needs a non-negative integer`);
      return n;
    };
    switch (a) {
      case '--files': o.files = num(); break;
      case '--snapshots': o.snapshots = num(); break;
      case '--runs': o.runs = Math.max(1, num()); break;
      case '--size-mib': o.sizeMiB = num(); break;
      case '--image': o.image = val(); break;
      case '--work': o.work = val(); break;
      case '--keep': o.keep = true; break;
      case '-h': case '--help': usage();
      default: usage(`unknown argument ${a}`);
    }
  }
  return o;
}

/** A small deterministic generator, so that two runs build the same tree. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `root` with `n` files in nested directories, plus links, symlinks and (via setfattr --restore) xattrs. */
async function populate(root: string, n: number, r: () => number): Promise<void> {
  const perDir = 100;
  const block = Buffer.alloc(128 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = (i * 131 + (i >> 9)) & 0xff;
  const xattrs: string[] = [];
  await fsp.mkdir(path.join(root, 'links'), { recursive: true });
  for (let i = 0; i < n; i++) {
    const dir = path.join(root, `d${Math.floor(i / (perDir * 50))}`, `d${Math.floor(i / perDir)}`);
    if (i % perDir === 0) await fsp.mkdir(dir, { recursive: true });
    const file = path.join(dir, `file-${i}-${Math.floor(r() * 1e6).toString(36)}`);
    const x = r();
    const size = x < 0.33 ? 1 + Math.floor(r() * 2000) : x < 0.95 ? 4096 + Math.floor(r() * 12288) : 65536 + Math.floor(r() * 65536);
    // Vary the bytes per file so compression and dedup-free extents look like real data.
    block.writeUInt32LE(i, 0);
    await fsp.writeFile(file, block.subarray(0, size));
    if (i % 40 === 7) await fsp.link(file, path.join(root, 'links', `l${i}`));
    if (i % 97 === 3) await fsp.symlink(path.basename(file), `${file}.sym`);
    if (i % 25 === 11) xattrs.push(`# file: ${file}\nuser.bench="${i}"\nuser.note="${'x'.repeat(i % 50)}"\n`);
  }
  const dump = path.join(os.tmpdir(), `bench-check-xattrs-${process.pid}`);
  await fsp.writeFile(dump, xattrs.join('\n'));
  try {
    await runOk('setfattr', [`--restore=${dump}`]);
  } finally {
    await fsp.rm(dump, { force: true });
  }
}

/** Changes some of what a snapshot saw, so that the trees diverge (COW, shared and unshared blocks). */
async function churn(root: string, round: number, r: () => number): Promise<void> {
  const top = (await fsp.readdir(root)).filter((d) => /^d\d+$/.test(d));
  for (const t of top) {
    const subs = await fsp.readdir(path.join(root, t));
    for (const s of subs.filter(() => r() < 0.15)) {
      const dir = path.join(root, t, s);
      const files = await fsp.readdir(dir);
      for (const f of files.slice(0, 10)) {
        const p = path.join(dir, f);
        if (r() < 0.5) await fsp.rm(p, { force: true });
        else await fsp.appendFile(p, `round ${round}\n`).catch(() => undefined);
      }
      await fsp.writeFile(path.join(dir, `new-${round}`), Buffer.alloc(6000, round));
    }
  }
}

async function buildImage(img: string, o: Opts): Promise<void> {
  const st = await nativeAvailable();
  if (!st.ok) throw new Error(`building an image needs the native kernel tier (root, loop devices, btrfs): ${st.reason}; pass --image PATH to use an existing one`);
  await mkfs(img, o.sizeMiB * 1048576, []);
  const r = rng(0xb7f5);
  const t0 = Date.now();
  await withMount(img, { options: ['compress=zstd:1'] }, async (mnt) => {
    await runOk('btrfs', ['subvolume', 'create', path.join(mnt, 'data')]);
    await populate(path.join(mnt, 'data'), o.files, r);
    for (let s = 1; s <= o.snapshots; s++) {
      await runOk('btrfs', ['subvolume', 'snapshot', path.join(mnt, 'data'), path.join(mnt, `snap${s}`)]);
      await churn(path.join(mnt, 'data'), s, r);
    }
    await runOk('btrfs', ['filesystem', 'sync', mnt]);
  });
  console.log(`image built in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${o.files} files, ${o.snapshots} snapshots, ${o.sizeMiB} MiB sparse`);
}

interface Timed { ms: number; code: number | null; rssKiB?: number; out: string }

/** Runs a command, timing it; with /usr/bin/time present its max RSS is taken from there. */
function timed(cmd: string, args: string[]): Promise<Timed> {
  const haveTime = existsSync('/usr/bin/time');
  const argv = haveTime ? ['-f', '%M', cmd, ...args] : args;
  const exe = haveTime ? '/usr/bin/time' : cmd;
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(exe, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('error', reject);
    c.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      let rssKiB: number | undefined;
      if (haveTime) {
        const lines = err.trimEnd().split('\n');
        const last = Number(lines.pop());
        if (Number.isFinite(last)) { rssKiB = last; err = lines.join('\n'); }
      }
      resolve({ ms, code, rssKiB, out: out + err });
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
  const work = o.work ?? (o.image ? undefined : await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-bench-check-')));
  if (work) await fsp.mkdir(work, { recursive: true });
  const img = o.image ?? path.join(work!, 'bench.img');
  try {
    if (!o.image) await buildImage(img, o);
    const theirs = () => timed('btrfs', ['check', '--readonly', img]);
    const ours = () => timed(process.execPath, [cli, 'check', img]);
    // Warm the page cache (and check that both find the image clean) before timing anything.
    const w1 = await theirs();
    const w2 = await ours();
    if (w1.code !== 0 || !/no error found/.test(w1.out)) throw new Error(`btrfs check does not find the image clean:\n${w1.out}`);
    if (w2.code !== 0) throw new Error(`tsbtrfs check does not find the image clean:\n${w2.out}`);
    const stats = w2.out.split('\n').find((l) => l.startsWith('checked ')) ?? '';
    const t: number[] = [];
    const u: number[] = [];
    const rss: number[] = [];
    const theirRss: number[] = [];
    for (let run = 1; run <= o.runs; run++) {
      const a = await theirs();
      const b = await ours();
      t.push(a.ms);
      u.push(b.ms);
      if (b.rssKiB !== undefined) rss.push(b.rssKiB);
      if (a.rssKiB !== undefined) theirRss.push(a.rssKiB);
      console.log(`run ${run}: btrfs check ${(a.ms / 1000).toFixed(2)} s, tsbtrfs check ${(b.ms / 1000).toFixed(2)} s${b.rssKiB ? ` (peak RSS ${(b.rssKiB / 1024).toFixed(0)} MiB)` : ''}`);
    }
    const mt = median(t);
    const mu = median(u);
    console.log(`\ncheck benchmark, ${path.basename(img)} (${stats.replace(/ in [\d.]+s$/, '')}), median of ${o.runs} warm-cache runs:`);
    const peak = (xs: number[]) => (xs.length ? `   peak RSS ${(Math.max(...xs) / 1024).toFixed(0)} MiB` : '');
    console.log(`  btrfs check --readonly   ${(mt / 1000).toFixed(2).padStart(7)} s${peak(theirRss)}`);
    console.log(`  tsbtrfs check            ${(mu / 1000).toFixed(2).padStart(7)} s${peak(rss)}`);
    console.log(`  ratio tsbtrfs/btrfs-check: ${(mu / mt).toFixed(2)}x time${rss.length && theirRss.length ? `, ${(Math.max(...rss) / Math.max(...theirRss)).toFixed(2)}x peak memory` : ''}`);
  } finally {
    if (work && !o.keep && !o.image) await fsp.rm(work, { recursive: true, force: true });
    else if (work) console.log(`kept ${work}`);
  }
}

main().catch((e: Error) => {
  process.stderr.write(`bench-check: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
