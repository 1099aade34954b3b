/**
 * Import benchmark: `tsbtrfs mkfs -r` against `mkfs.btrfs --rootdir`, side by
 * side on the same input, in one run.
 *
 *   npm run build && node dist/scripts/bench-import.js [--src DIR] [--big M] [--big-mib S] [--runs R] [--keep]
 *
 * Input: a language's standard library on this machine (default the
 * largest of /usr/lib/python3*, ~/.pyenv/versions/*\/lib/python3*, node's
 * lib) copied to a work directory, plus M files of S MiB of random data
 * (default 3 x 256). Each run times both commands on a fresh image file of
 * the same size, page cache dropped before each, and reads peak RSS from
 * /usr/bin/time. Both images are then checked with `btrfs check`, and the
 * tsbtrfs image is compared with the input through a kernel mount, so the
 * benchmark cannot pass by doing less. Needs root for the kernel mount.
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runOk, sh, withMount, btrfsCheck } from '../test/helpers/kernel.js';
import { manifestOf, diffManifests } from '../test/helpers/manifest.js';

interface Opts { src?: string; big: number; bigMiB: number; runs: number; keep: boolean }

function parse(argv: string[]): Opts {
  const o: Opts = { big: 3, bigMiB: 256, runs: 1, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => argv[++i] ?? '';
    if (a === '--src') o.src = v();
    else if (a === '--big') o.big = Number(v());
    else if (a === '--big-mib') o.bigMiB = Number(v());
    else if (a === '--runs') o.runs = Number(v());
    else if (a === '--keep') o.keep = true;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

async function countFiles(dir: string): Promise<{ files: number; bytes: number }> {
  const out = await runOk('sh', ['-c', `find ${JSON.stringify(dir)} | wc -l; du -sb ${JSON.stringify(dir)} | cut -f1`]);
  const [files, bytes] = out.stdout.trim().split('\n').map(Number);
  return { files: files!, bytes: bytes! };
}

async function pickSource(): Promise<string> {
  const cands: string[] = [];
  for (const base of ['/usr/lib', path.join(os.homedir(), '.pyenv/versions')]) {
    const r = await run('sh', ['-c', `ls -d ${base}/python3* ${base}/*/lib/python3* 2>/dev/null`]);
    cands.push(...r.stdout.split('\n').filter(Boolean));
  }
  let best = '';
  let most = 0;
  for (const c of cands) {
    const n = (await countFiles(c)).files;
    if (n > most) { most = n; best = c; }
  }
  if (!best) throw new Error('no language standard library found; pass --src DIR');
  return best;
}

/** Wall time and peak RSS of a command, caches dropped first. */
async function timed(cmd: string[]): Promise<{ ms: number; rssMiB: number }> {
  await sh('sync; echo 3 > /proc/sys/vm/drop_caches');
  const t0 = performance.now();
  const r = await run('/usr/bin/time', ['-f', 'RSS %M', ...cmd]);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} failed:\n${r.output.slice(-2000)}`);
  const m = /RSS (\d+)/.exec(r.stderr);
  return { ms, rssMiB: m ? Number(m[1]) / 1024 : NaN };
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const here = path.dirname(fileURLToPath(import.meta.url));
  const cli = path.resolve(here, '../src/cli/main.js');
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-bench-import-'));
  try {
    const src = o.src ?? (await pickSource());
    const input = path.join(work, 'input');
    await runOk('cp', ['-a', src, input]);
    for (let i = 0; i < o.big; i++) {
      await runOk('dd', ['if=/dev/urandom', `of=${path.join(input, `big${i}.bin`)}`, 'bs=1M', `count=${o.bigMiB}`, 'status=none']);
    }
    const { files, bytes } = await countFiles(input);
    const size = Math.ceil((bytes * 1.25 + files * 4096 + 512 * 1024 * 1024) / (1 << 20)) * (1 << 20);
    console.log(`input: ${src} + ${o.big} x ${o.bigMiB} MiB: ${files} entries, ${(bytes / 2 ** 20).toFixed(0)} MiB; image ${Math.round(size / 2 ** 20)} MiB`);
    const img1 = path.join(work, 'progs.img');
    const img2 = path.join(work, 'tsbtrfs.img');
    const rows: { progs: number; ours: number; progsRss: number; oursRss: number }[] = [];
    for (let r = 0; r < o.runs; r++) {
      for (const img of [img1, img2]) {
        await fsp.rm(img, { force: true });
        await runOk('truncate', ['-s', String(size), img]);
      }
      const p = await timed(['mkfs.btrfs', '-q', '-f', '--rootdir', input, img1]);
      const t = await timed([process.execPath, cli, 'mkfs', '-f', '-r', input, img2]);
      rows.push({ progs: p.ms, ours: t.ms, progsRss: p.rssMiB, oursRss: t.rssMiB });
      console.log(`run ${r + 1}: mkfs.btrfs --rootdir ${(p.ms / 1000).toFixed(2)} s (${p.rssMiB.toFixed(0)} MiB RSS), tsbtrfs mkfs -r ${(t.ms / 1000).toFixed(2)} s (${t.rssMiB.toFixed(0)} MiB RSS), ratio ${(t.ms / p.ms).toFixed(2)}x`);
    }
    const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const ratio = med(rows.map((x) => x.ours)) / med(rows.map((x) => x.progs));
    for (const img of [img1, img2]) {
      const c = await btrfsCheck(img);
      if (!c.ok) throw new Error(`btrfs check failed on ${path.basename(img)}:\n${c.output.slice(-2000)}`);
    }
    const want = await manifestOf(input);
    const diffs = await withMount(img2, { readonly: true }, async (mnt) => diffManifests(want, await manifestOf(mnt)));
    if (diffs.length) throw new Error(`the tsbtrfs image differs from the input:\n${diffs.slice(0, 20).join('\n')}`);
    console.log(`ratio tsbtrfs/mkfs.btrfs (median of ${rows.length}): ${ratio.toFixed(2)}x; peak RSS tsbtrfs ${med(rows.map((x) => x.oursRss)).toFixed(0)} MiB vs ${med(rows.map((x) => x.progsRss)).toFixed(0)} MiB; both images pass btrfs check, ours equals the input through a kernel mount`);
  } finally {
    if (!o.keep) await fsp.rm(work, { recursive: true, force: true });
    else console.log(`kept ${work}`);
  }
}

await main();
