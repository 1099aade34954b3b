/**
 * Read benchmark: tsbtrfs `get` against the kernel, side by side.
 *
 *   npm run build && node dist/scripts/bench-read.js [--files N] [--big M] [--big-mib S]
 *       [--src DIR] [--runs R] [--compress zstd|lzo|zlib] [--work DIR] [--keep]
 *
 * Makes a kernel image holding N entries copied from a real tree on this
 * machine (default: the first 15000 of /usr/share in sorted walk order) plus
 * M big files of S MiB each (default 3 x 256 MiB of /dev/urandom), unmounts,
 * then for each run, with caches dropped (echo 3 > /proc/sys/vm/drop_caches)
 * before each timed step:
 *
 *   kernel:  tar -C MOUNT -cf - . | tar -C DEST1 -xf -   (read-only kernel mount)
 *   tsbtrfs: extract(fs, '/', DEST2)                     (in a child process, for its peak RSS)
 *
 * and prints times, the ratio tsbtrfs/kernel, entries/s, MiB/s and peak RSS.
 * DEST2 is then compared with the kernel's view of the image (manifest
 * without xattrs) so the benchmark cannot pass by doing nothing. Needs root,
 * loop devices and btrfs in the kernel. Everything is unmounted and removed
 * in `finally` (unless --keep).
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Filesystem } from '../src/fs/filesystem.js';
import { extract } from '../src/fs/extract.js';
import { mkfs, withMount, runOk, sh, nativeAvailable } from '../test/helpers/kernel.js';
import { manifestOf, diffManifests } from '../test/helpers/manifest.js';

interface Opts {
  files: number;
  big: number;
  bigMiB: number;
  src: string;
  runs: number;
  compress?: string;
  work?: string;
  keep: boolean;
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`bench-read: ${msg}\n`);
  process.stderr.write('usage: node dist/scripts/bench-read.js [--files N] [--big M] [--big-mib S] [--src DIR] [--runs R] [--compress ALG] [--work DIR] [--keep]\n');
  process.exit(2);
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { files: 15000, big: 3, bigMiB: 256, src: '/usr/share', runs: 1, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    const num = (): number => {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 0) usage(`${a} needs a non-negative integer`);
      return n;
    };
    switch (a) {
      case '--files': o.files = num(); break;
      case '--big': o.big = num(); break;
      case '--big-mib': o.bigMiB = num(); break;
      case '--src': o.src = val(); break;
      case '--runs': o.runs = Math.max(1, num()); break;
      case '--compress': o.compress = val(); break;
      case '--work': o.work = val(); break;
      case '--keep': o.keep = true; break;
      case '-h': case '--help': usage();
      default: usage(`unknown argument ${a}`);
    }
  }
  return o;
}

/** The first `n` entries (files, symlinks, dirs) of `root` in sorted depth-first order, relative. */
async function pickEntries(root: string, n: number): Promise<{ rel: string[]; bytes: number }> {
  const out: string[] = [];
  let bytes = 0;
  const walk = async (dir: string, rel: string): Promise<void> => {
    let names: string[];
    try {
      names = (await fsp.readdir(dir)).sort();
    } catch {
      return;
    }
    for (const name of names) {
      if (out.length >= n) return;
      const abs = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = await fsp.lstat(abs).catch(() => undefined);
      if (!st) continue;
      if (st.isDirectory()) {
        out.push(r);
        await walk(abs, r);
      } else if (st.isFile() || st.isSymbolicLink()) {
        out.push(r);
        if (st.isFile()) bytes += st.size;
      }
    }
  };
  await walk(root, '');
  return { rel: out, bytes };
}

async function dropCaches(): Promise<void> {
  await sh('sync; echo 3 > /proc/sys/vm/drop_caches');
}

function fmtMs(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

interface ChildResult { ms: number; maxRssKiB: number; files: number; dirs: number; bytes: number; hardlinks: number; warnings: number }

/** Child mode: extract IMG / into DEST and report time and peak RSS as JSON on stdout. */
async function child(img: string, dest: string): Promise<void> {
  const t0 = process.hrtime.bigint();
  const fs = await Filesystem.open(img);
  let r;
  try {
    r = await extract(fs, '/', dest, { onWarning: () => undefined });
  } finally {
    await fs.close();
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const res: ChildResult = { ms, maxRssKiB: process.resourceUsage().maxRSS, files: r.files, dirs: r.dirs, bytes: r.bytes, hardlinks: r.hardlinks, warnings: r.warnings.length };
  process.stdout.write(JSON.stringify(res) + '\n');
}

function runChild(img: string, dest: string): Promise<{ wallMs: number; res: ChildResult }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', img, dest], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.setEncoding('utf8');
    c.stdout.on('data', (d: string) => { out += d; });
    c.on('error', reject);
    c.on('close', (code) => {
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== 0) return reject(new Error(`tsbtrfs extract child exited ${code}`));
      try {
        resolve({ wallMs, res: JSON.parse(out.trim().split('\n').pop()!) as ChildResult });
      } catch (e) {
        reject(new Error(`bad child output ${JSON.stringify(out)}: ${(e as Error).message}`));
      }
    });
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1]!, argv[2]!);
  const o = parseArgs(argv);
  const st = await nativeAvailable();
  if (!st.ok) throw new Error(`needs the native kernel tier (root, loop devices, btrfs): ${st.reason}`);

  const work = o.work ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-bench-')));
  await fsp.mkdir(work, { recursive: true });
  const img = path.join(work, 'bench.img');
  const list = path.join(work, 'files.lst');
  const dest1 = path.join(work, 'dest-kernel');
  const dest2 = path.join(work, 'dest-tsbtrfs');
  try {
    // ------------------------------------------------------------ build the image
    const picked = await pickEntries(o.src, o.files);
    await fsp.writeFile(list, picked.rel.map((r) => r + '\0').join(''));
    const dataBytes = picked.bytes + o.big * o.bigMiB * 1048576;
    const imgSize = Math.ceil((dataBytes * 1.5 + (picked.rel.length * 8192) + (768 << 20)) / 1048576) * 1048576;
    console.log(`source: ${picked.rel.length} entries (${(picked.bytes / 1048576).toFixed(1)} MiB) from ${o.src} + ${o.big} x ${o.bigMiB} MiB random files; image ${(imgSize / 1048576).toFixed(0)} MiB sparse${o.compress ? `, compress-force=${o.compress}` : ''}`);
    await mkfs(img, imgSize, []);
    const tb = Date.now();
    await withMount(img, { options: ['subvolid=5', ...(o.compress ? [`compress-force=${o.compress}`] : [])] }, async (mnt) => {
      await fsp.mkdir(path.join(mnt, 'tree'));
      // --no-recursion: the list already holds every entry (dirs and their contents separately)
      await sh(`tar -C ${JSON.stringify(o.src)} --null --no-recursion -T ${JSON.stringify(list)} -cf - | tar -C ${JSON.stringify(path.join(mnt, 'tree'))} -xf -`);
      for (let i = 0; i < o.big; i++) {
        await runOk('dd', ['if=/dev/urandom', `of=${path.join(mnt, `big${i}.bin`)}`, 'bs=1M', `count=${o.bigMiB}`, 'status=none']);
      }
      await runOk('btrfs', ['filesystem', 'sync', mnt]);
    });
    console.log(`image built in ${((Date.now() - tb) / 1000).toFixed(1)} s`);

    // kernel's view, for verification (not timed)
    const kernel = await withMount(img, { readonly: true, options: ['subvolid=5'] }, (mnt) => manifestOf(mnt, { noXattrs: true }));
    const entries = Object.keys(kernel).length;
    const totalBytes = Object.values(kernel).reduce((s, e) => s + (e.type === 'file' ? e.size ?? 0 : 0), 0);
    const mib = totalBytes / 1048576;

    // ------------------------------------------------------------ timed runs
    const rows: { run: number; tarMs: number; libMs: number; libWallMs: number; rssKiB: number }[] = [];
    for (let run = 1; run <= o.runs; run++) {
      await fsp.rm(dest1, { recursive: true, force: true });
      await fsp.rm(dest2, { recursive: true, force: true });
      await fsp.mkdir(dest1);
      await fsp.mkdir(dest2);

      await dropCaches();
      const tarMs = await withMount(img, { readonly: true, options: ['subvolid=5'] }, async (mnt) => {
        const t0 = process.hrtime.bigint();
        await sh(`tar -C ${JSON.stringify(mnt)} -cf - . | tar -C ${JSON.stringify(dest1)} -xf -`);
        await sh(`sync -f ${JSON.stringify(dest1)}`); // both sides end with their data written back
        return Number(process.hrtime.bigint() - t0) / 1e6;
      });

      await dropCaches();
      const t1 = process.hrtime.bigint();
      const { res } = await runChild(img, dest2);
      await sh(`sync -f ${JSON.stringify(dest2)}`);
      const libWallMs = Number(process.hrtime.bigint() - t1) / 1e6;
      rows.push({ run, tarMs, libMs: res.ms, libWallMs, rssKiB: res.maxRssKiB });
      console.log(`run ${run}: kernel tar ${fmtMs(tarMs)}, tsbtrfs ${fmtMs(libWallMs)} (extract ${fmtMs(res.ms)} + node start/sync), ` +
        `${res.files} files ${res.dirs} dirs ${res.hardlinks} hard links, ${(res.bytes / 1048576).toFixed(1)} MiB written, peak RSS ${(res.maxRssKiB / 1024).toFixed(0)} MiB`);
    }

    // ------------------------------------------------------------ verify
    const got = await manifestOf(dest2, { noXattrs: true });
    const diff = diffManifests(kernel, got, { ignore: ['xattrs'] });
    if (diff.length) throw new Error(`tsbtrfs' extraction differs from the kernel's view:\n${diff.slice(0, 30).join('\n')}`);
    console.log(`verified: ${entries} entries of the extracted tree equal the kernel's view (type, mode, owner, size, sha256, target, nlink, rdev, mtime)`);

    // ------------------------------------------------------------ report
    const best = (f: (r: typeof rows[number]) => number) => Math.min(...rows.map(f));
    const tar = best((r) => r.tarMs);
    const lib = best((r) => r.libWallMs);
    const rss = Math.max(...rows.map((r) => r.rssKiB));
    const line = (name: string, ms: number, extra = '') =>
      `  ${name.padEnd(22)} ${fmtMs(ms).padStart(9)}  ${(entries / (ms / 1000)).toFixed(0).padStart(8)} entries/s  ${(mib / (ms / 1000)).toFixed(1).padStart(7)} MiB/s${extra}`;
    console.log(`\nread benchmark: ${entries} entries, ${mib.toFixed(1)} MiB of file data (best of ${o.runs} run(s), cold caches)`);
    console.log(line('kernel (tar | tar)', tar));
    console.log(line('tsbtrfs get', lib, `  peak RSS ${(rss / 1024).toFixed(0)} MiB`));
    console.log(`  ratio tsbtrfs/kernel: ${(lib / tar).toFixed(2)}x`);
  } finally {
    if (o.keep) console.log(`kept ${work}`);
    else await fsp.rm(work, { recursive: true, force: true });
  }
}

main().catch((e: Error) => {
  process.stderr.write(`bench-read: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
