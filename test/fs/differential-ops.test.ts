/**
 * The POSIX layer against the kernel, operation by operation: the same
 * seeded random operations run through node:fs on a kernel mount of one
 * image and through WritableFilesystem on a copy of it; every operation
 * must succeed or fail with the same errno on both, and at the end the
 * kernel must see the same tree in both images (names, types, modes,
 * owners, sizes, contents, links, xattrs, rdev, directory sizes), both
 * images pass btrfs check and ours passes our check. The starting image is
 * filled by the kernel (trees of several levels), so we write into
 * kernel-made trees; then the kernel writes into ours and our read side
 * must see what it wrote.
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { mulberry32 } from '../../src/util/random.js';
import * as host from '../../src/util/host.js';
import { mkfs, withMount, requireNativeOrSkip, sh, run } from '../helpers/kernel.js';
import { manifestOf, diffManifests } from '../helpers/manifest.js';
import { libraryManifest } from '../helpers/library-manifest.js';
import { expectClean } from '../helpers/strict.js';
import { type Op, bytes, randomOps, code, onOurs } from '../helpers/random-ops.js';

const MiB = 1024 * 1024;
/** A hung operation fails the test naming itself instead of stalling the run. */
async function bounded<T>(p: Promise<T>, what: string, ms = 30_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`operation hung for ${ms} ms: ${what}`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

async function onKernel(mnt: string, o: Op): Promise<string> {
  const P = (x: string) => path.join(mnt, x);
  switch (o.op) {
    case 'mkdir': return code(() => fs.mkdir(P(o.p), { mode: o.mode }));
    case 'rmdir': return code(() => fs.rmdir(P(o.p)));
    case 'unlink': return code(() => fs.unlink(P(o.p)));
    case 'writeFile': return code(() => fs.writeFile(P(o.p), bytes(o.size, o.seed)));
    case 'appendFile': return code(() => fs.appendFile(P(o.p), bytes(o.size, o.seed)));
    case 'pwrite': return code(async () => {
      const fh = await fs.open(P(o.p), 'r+');
      try { await fh.write(bytes(o.size, o.seed), 0, o.size, o.pos); } finally { await fh.close(); }
    });
    case 'truncate': return code(() => fs.truncate(P(o.p), o.len));
    case 'rename': return code(() => fs.rename(P(o.p), P(o.q)));
    case 'link': return code(() => fs.link(P(o.p), P(o.q)));
    case 'symlink': return code(() => fs.symlink(o.target, P(o.p)));
    case 'chmod': return code(() => fs.chmod(P(o.p), o.mode));
    case 'chown': return code(() => fs.chown(P(o.p), o.uid, o.gid));
    case 'utimes': return code(async () => { await fs.stat(P(o.p)); host.lutimensNs(await fs.realpath(P(o.p)), BigInt(o.sec), o.nsec, BigInt(o.sec), o.nsec); });
    case 'setxattr': return code(() => host.lsetxattr(P(o.p), o.name, Buffer.from(o.value)));
    case 'removexattr': return code(() => host.lremovexattr(P(o.p), o.name));
    case 'mkfifo': return code(() => host.mknod(P(o.p), 0o010644));
  }
}

describe('POSIX layer: the same random operations on the kernel and on tsbtrfs', function () {
  this.timeout(900_000);
  let dir: string;

  before(async function () {
    await requireNativeOrSkip(this);
    if (!host.nativeHostAvailable()) this.skip();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-posix-'));
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const seeds = process.env.TSBTRFS_POSIX_SEEDS ? process.env.TSBTRFS_POSIX_SEEDS.split(',').map(Number) : [4242, 31337];
  for (const seed of seeds) {
    it(`seed ${seed}: 1500 operations give the same errnos and the same tree; round trips both ways`, async () => {
      console.log(`      seed ${seed} (TSBTRFS_POSIX_SEEDS=${seed} replays it)`);
      const kimg = path.join(dir, `k-${seed}.img`);
      const oimg = path.join(dir, `o-${seed}.img`);
      await mkfs(kimg, 512 * MiB, seed % 2 ? ['-n', '4096'] : []);
      // the kernel fills a tree of several levels first; the copy is where we write
      await withMount(kimg, {}, async (mnt) => {
        await sh(`mkdir -p ${mnt}/top ${mnt}/bulk && cd ${mnt}/bulk && for i in $(seq 1 1500); do echo $i > f$i; done && dd if=/dev/urandom of=${mnt}/bulk/big bs=1M count=3 status=none`);
      });
      await fs.copyFile(kimg, oimg);
      const ops = randomOps(seed, 1500);
      const w = await WritableFilesystem.open(oimg);
      const mismatches: string[] = [];
      try {
        await withMount(kimg, {}, async (mnt) => {
          for (let i = 0; i < ops.length; i++) {
            const o = ops[i]!;
            if (process.env.TSBTRFS_TRACE) console.log(i, JSON.stringify(o));
            // opening a fifo for writing blocks until a reader comes: not a question of errnos
            if ((o.op === 'writeFile' || o.op === 'appendFile' || o.op === 'pwrite' || o.op === 'truncate') && (await fs.stat(path.join(mnt, o.p)).then((st) => !st.isFile() && !st.isDirectory(), () => false))) continue;
            const k = await bounded(onKernel(mnt, o), `kernel #${i} ${JSON.stringify(o)} (seed ${seed})`);
            const t = await bounded(onOurs(w, o), `tsbtrfs #${i} ${JSON.stringify(o)} (seed ${seed})`);
            if (k !== t) mismatches.push(`#${i} ${JSON.stringify(o)}: kernel ${k}, tsbtrfs ${t}`);
            if (i % 500 === 499) await w.commit();
          }
        });
      } finally {
        await w.close();
      }
      expect(mismatches, `seed ${seed}`).to.deep.equal([]);
      await expectClean(oimg);
      await expectClean(kimg);
      const km = await withMount(kimg, { readonly: true }, (mnt) => manifestOf(mnt));
      const om = await withMount(oimg, { readonly: true }, (mnt) => manifestOf(mnt));
      // times differ where "now" was taken; utimes'd and untouched entries are checked by their own tests
      expect(diffManifests(km, om, { ignore: ['mtime_ns'], strictDirs: true }), `seed ${seed}`).to.deep.equal([]);
      // the kernel writes into our image; our read side must see exactly what the kernel shows
      await withMount(oimg, {}, async (mnt) => {
        await sh(`cd ${mnt}/top && mkdir -p kdir/sub && echo kernel > kdir/sub/file && ln -s kdir klink && touch -d @1234567890.123456789 kdir/sub/file && rm -rf ${mnt}/bulk/f1*`);
      });
      // every data and metadata checksum we wrote verifies
      await withMount(oimg, {}, async (mnt) => {
        const scrub = await run('btrfs', ['scrub', 'start', '-B', mnt]);
        expect(scrub.code, scrub.output).to.equal(0);
        expect(scrub.output).to.match(/no errors found/);
      });
      const kernelView = await withMount(oimg, { readonly: true }, (mnt) => manifestOf(mnt));
      const ours = await Filesystem.open(oimg);
      try {
        expect(diffManifests(kernelView, await libraryManifest(ours), { strictDirs: true })).to.deep.equal([]);
      } finally {
        await ours.close();
      }
      await expectClean(oimg);
    });
  }
});
