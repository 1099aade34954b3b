/**
 * Native kernel tier, random images: on every run, FRESH images made with the
 * real mkfs.btrfs and filled through a kernel mount by a seeded random
 * generator (test/native/random-tree.ts), then read back by tsbtrfs and
 * compared with what the kernel shows:
 *
 *   (a) libraryManifest(Filesystem.open(img)) equals the kernel manifest
 *       (every field incl. inode numbers, dir sizes, dir nlink, dev boundaries),
 *   (b) extract(fs, '/', tmp) onto the host equals the kernel manifest,
 *   (c) listSubvolumes() agrees with `btrfs subvolume list` (and the default
 *       subvolume with `btrfs subvolume get-default`),
 *   (d) lstat of every path (blocks, atime/ctime/btime, rdev, ...) and readdir
 *       order agree with the kernel's.
 *
 * Seeds are printed; reproduce with TSBTRFS_SEED=1234 (or "1,2,3"), change
 * the number of fresh images with TSBTRFS_RANDOM_IMAGES=N, keep the work
 * directory (image, gen.log, manifests) with TSBTRFS_KEEP=1 (it is also kept
 * when a test fails). Needs root + loop devices + btrfs (requireNativeOrSkip),
 * python3, setfacl, chattr, getfattr and fallocate.
 */
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Filesystem } from '../../src/fs/filesystem.js';
import { extract } from '../../src/fs/extract.js';
import {
  requireNativeOrSkip, mkfs, withMount, subvolumeList, defaultSubvolume, btrfsCheck, loopDevicesFor, type SubvolumeInfo,
} from '../helpers/kernel.js';
import { manifestOf, diffManifests, manifestToJson, type Manifest } from '../helpers/manifest.js';
import { libraryManifest } from '../helpers/library-manifest.js';
import { Rng, planImage, seedsFromEnv, TreeGenerator, type ImagePlan, type GenStats } from './random-tree.js';

const COUNT = Number(process.env.TSBTRFS_RANDOM_IMAGES ?? 3);
const seeds = seedsFromEnv(COUNT);
const KEEP = !!process.env.TSBTRFS_KEEP && process.env.TSBTRFS_KEEP !== '0';
console.log(`random images: seeds ${seeds.join(',')} (reproduce with TSBTRFS_SEED=${seeds.join(',')})`);

/**
 * The kernel's stand-in for a subvolume entry with nothing behind it (a
 * nested subvolume seen from a snapshot of its parent) is a directory with
 * ino 2 whose times are the current time when the kernel first instantiates
 * it: those cannot be reproduced, so its mtime (and ctime/btime in (d)) is
 * left out of every check (diffManifests also skips it for entries marked
 * subvol_placeholder). Everything else about it must match what Linux 6.18
 * shows: mode 0755, uid/gid and atime of the parent directory, nlink 1,
 * ino 2, size 0, no xattrs, its own st_dev (dev_boundary + subvol_placeholder).
 */
function placeholderPaths(m: Manifest): string[] {
  return Object.entries(m).filter(([, e]) => e.ino === '2' && e.type === 'dir').map(([p]) => p);
}
function withoutPlaceholderTimes(diff: string[], ph: string[]): string[] {
  return diff.filter((d) => !(d.includes('mtime_ns') && ph.some((p) => d.startsWith(`${p}: `))));
}

interface KStat {
  ino: string; mode: number; nlink: number; uid: number; gid: number; rdev: string; size: string; blocks: string; blksize: number;
  atimeNs: string; mtimeNs: string; ctimeNs: string; birthtimeNs: string;
}
function kstat(st: BigIntStats): KStat {
  return {
    ino: st.ino.toString(), mode: Number(st.mode), nlink: Number(st.nlink), uid: Number(st.uid), gid: Number(st.gid),
    rdev: st.rdev.toString(), size: st.size.toString(), blocks: st.blocks.toString(), blksize: Number(st.blksize),
    atimeNs: st.atimeNs.toString(), mtimeNs: st.mtimeNs.toString(), ctimeNs: st.ctimeNs.toString(), birthtimeNs: st.birthtimeNs.toString(),
  };
}

/** lstat of every path and the kernel's readdir order of every directory, through the mount. */
async function kernelStatsAndOrder(mnt: string): Promise<{ stats: Map<string, KStat>; order: Map<string, string[]> }> {
  const stats = new Map<string, KStat>();
  const order = new Map<string, string[]>();
  const visit = async (abs: string, rel: string): Promise<void> => {
    const st = await fsp.lstat(abs, { bigint: true });
    stats.set(rel, kstat(st));
    if (st.isDirectory()) {
      // getdents order (btrfs: DIR_INDEX order); fs.readdir would sort (libuv scandir)
      const names: string[] = [];
      for await (const d of await fsp.opendir(abs)) names.push(d.name);
      order.set(rel, names);
      for (const n of names) await visit(path.join(abs, n), rel === '/' ? `/${n}` : `${rel}/${n}`);
    }
  };
  await visit(mnt, '/');
  return { stats, order };
}

/** Node's user-space dev_t (glibc makedev) from a major/minor pair. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** Differences "FIELD: PATH: ..." grouped by field: a count and the first few of each, so one kind of bug does not hide another. */
function summarize(diffs: string[], each = 4): string[] {
  const by = new Map<string, string[]>();
  for (const d of diffs) {
    const f = d.slice(0, d.indexOf(':'));
    by.set(f, [...(by.get(f) ?? []), d]);
  }
  const out: string[] = [];
  for (const [f, list] of by) {
    out.push(`${f}: ${list.length} difference(s)`);
    out.push(...list.slice(0, each));
  }
  return out;
}

describe('native: fresh random kernel images read by tsbtrfs', function () {
  this.timeout(600_000);

  before(async function () {
    await requireNativeOrSkip(this);
  });

  for (const seed of seeds) {
    describe(`seed ${seed}`, function () {
      let work = '';
      let img = '';
      let plan: ImagePlan;
      let stats: GenStats;
      let kernel: Manifest = {};
      let ksubs: SubvolumeInfo[] = [];
      let kdefault = 5;
      let kstats = new Map<string, KStat>();
      let korder = new Map<string, string[]>();
      let failed = false;
      const tag = () => `seed ${seed} (${plan?.describe ?? '?'}; TSBTRFS_SEED=${seed} to reproduce; work dir ${work})`;

      before(async function () {
        const rng = new Rng(seed);
        plan = planImage(rng);
        work = await fsp.mkdtemp(path.join(os.tmpdir(), `tsbtrfs-random-${seed}-`));
        img = path.join(work, 'random.img');
        await mkfs(img, plan.sizeBytes, plan.mkfsArgs);
        const t0 = Date.now();
        try {
          await withMount(img, { options: ['subvolid=5', ...plan.mountOptions] }, async (mnt) => {
            const gen = new TreeGenerator(mnt, rng, { dataBudget: plan.dataBudget, sectorsize: plan.sectorsize, logFile: path.join(work, 'gen.log') });
            stats = await gen.build();
          });
          const t1 = Date.now();
          // The image is attached read-only and mounted ro: nothing changes between the kernel's view and ours.
          await withMount(img, { readonly: true, options: ['subvolid=5'] }, async (mnt) => {
            kernel = await manifestOf(mnt);
            ksubs = await subvolumeList(mnt);
            kdefault = await defaultSubvolume(mnt);
            ({ stats: kstats, order: korder } = await kernelStatsAndOrder(mnt));
          });
          await fsp.writeFile(path.join(work, 'kernel.manifest.json'), manifestToJson(kernel));
          const chk = await btrfsCheck(img);
          if (!chk.ok) console.warn(`      warning: btrfs check is not clean for ${tag()}:\n${chk.problems.slice(0, 10).join('\n')}`);
          console.log(`      ${plan.describe}: ${Object.keys(kernel).length} paths, ${ksubs.length} subvolumes; ` +
            `generated in ${((t1 - t0) / 1000).toFixed(1)}s ${JSON.stringify(stats)}`);
        } catch (e) {
          failed = true;
          throw e;
        }
      });

      afterEach(function () {
        if (this.currentTest?.state === 'failed') failed = true;
      });

      after(async function () {
        if (!work) return;
        if (failed || KEEP) console.log(`      kept ${work} (image, gen.log, kernel.manifest.json) for ${tag()}`);
        else await fsp.rm(work, { recursive: true, force: true });
        const leaks = await loopDevicesFor(work);
        expect(leaks, 'loop devices left attached').to.deep.equal([]);
      });

      it('(a) the library view equals the kernel manifest (incl. inode numbers, dir sizes, dir nlink, dev boundaries)', async function () {
        const fs = await Filesystem.open(img);
        try {
          const mine = await libraryManifest(fs);
          const diff = diffManifests(kernel, mine, { compareIno: true, strictDirs: true, compareDevBoundary: true });
          expect(withoutPlaceholderTimes(diff, placeholderPaths(kernel)), tag()).to.deep.equal([]);
        } finally {
          await fs.close();
        }
      });

      it('(b) get / onto the host equals the kernel manifest', async function () {
        const dest = path.join(work, 'get');
        await fsp.mkdir(dest);
        const fs = await Filesystem.open(img);
        try {
          await extract(fs, '/', dest, { onWarning: () => undefined });
          const got = await manifestOf(dest);
          // btrfs.* xattrs (the compression property) are btrfs' own: the host (ext4/tmpfs) refuses them.
          const diff = diffManifests(kernel, got, { ignoreXattrs: [/^btrfs\./] });
          expect(withoutPlaceholderTimes(diff, placeholderPaths(kernel)), tag()).to.deep.equal([]);
        } finally {
          await fs.close();
          await fsp.rm(dest, { recursive: true, force: true });
        }
      });

      it('(c) listSubvolumes() agrees with btrfs subvolume list (id, path, uuids, generation, top level, ro) and get-default', async function () {
        const fs = await Filesystem.open(img);
        try {
          const mine = (await fs.listSubvolumes()).filter((s) => s.id !== 5n && !s.deleted);
          const got = mine.map((s) => ({
            id: Number(s.id), path: s.path.replace(/^\//, ''), uuid: s.uuid, parent_uuid: s.parentUuid, received_uuid: s.receivedUuid,
            generation: Number(s.generation), top_level: Number(s.parentId), ro: s.readOnly,
          })).sort((a, b) => a.id - b.id);
          const want = ksubs.map((s) => ({
            id: s.id, path: s.path, uuid: s.uuid, parent_uuid: s.parent_uuid, received_uuid: s.received_uuid,
            generation: s.generation, top_level: s.top_level, ro: !!s.ro,
          })).sort((a, b) => a.id - b.id);
          expect(got, tag()).to.deep.equal(want);
          expect(Number(await fs.getDefaultSubvolume()), `default subvolume, ${tag()}`).to.equal(kdefault);
        } finally {
          await fs.close();
        }
      });

      it('(d) lstat of every path and readdir order agree with the kernel', async function () {
        const fs = await Filesystem.open(img);
        const diffs: string[] = [];
        const ph = new Set(placeholderPaths(kernel));
        try {
          for (const [p, k] of kstats) {
            const st = await fs.lstat(p);
            const mine: KStat = {
              ino: st.inode.toString(), mode: st.mode, nlink: st.nlink, uid: st.uid, gid: st.gid,
              rdev: makedev(st.rdevMajor, st.rdevMinor).toString(), size: String(st.size), blocks: String(st.blocks), blksize: st.blksize,
              atimeNs: st.atimeNs.toString(), mtimeNs: st.mtimeNs.toString(), ctimeNs: st.ctimeNs.toString(), birthtimeNs: st.birthtimeNs.toString(),
            };
            for (const f of Object.keys(k) as Array<keyof KStat>) {
              // placeholder: mtime/ctime are the lookup time (see placeholderPaths); btime is 0 on
              // Linux 6.18 but version dependent; atime is the parent directory's and is compared
              if (ph.has(p) && f.endsWith('Ns') && f !== 'atimeNs') continue;
              if (k[f] !== mine[f]) diffs.push(`${f}: ${p}: kernel ${k[f]} tsbtrfs ${mine[f]}`);
            }
            const order = korder.get(p);
            if (order) {
              const names = await fs.readdir(p);
              if (JSON.stringify(names) !== JSON.stringify(order)) diffs.push(`readdir order: ${p}: kernel ${JSON.stringify(order).slice(0, 300)} tsbtrfs ${JSON.stringify(names).slice(0, 300)}`);
            }
          }
          expect(summarize(diffs), tag()).to.deep.equal([]);
        } finally {
          await fs.close();
        }
      });
    });
  }
});
