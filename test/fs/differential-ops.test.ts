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

const MiB = 1024 * 1024;
const NAMES = ['a', 'b', 'c', 'd'];

type Op =
  | { op: 'mkdir'; p: string; mode: number }
  | { op: 'rmdir' | 'unlink'; p: string }
  | { op: 'writeFile' | 'appendFile'; p: string; size: number; seed: number }
  | { op: 'pwrite'; p: string; pos: number; size: number; seed: number }
  | { op: 'truncate'; p: string; len: number }
  | { op: 'rename' | 'link'; p: string; q: string }
  | { op: 'symlink'; target: string; p: string }
  | { op: 'chmod'; p: string; mode: number }
  | { op: 'chown'; p: string; uid: number; gid: number }
  | { op: 'utimes'; p: string; sec: number; nsec: number }
  | { op: 'setxattr'; p: string; name: string; value: string }
  | { op: 'removexattr'; p: string; name: string }
  | { op: 'mkfifo'; p: string };

function bytes(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

function randomOps(seed: number, n: number): Op[] {
  const r = mulberry32(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const p = (): string => {
    const depth = 1 + Math.floor(r() * 3);
    return '/top/' + Array.from({ length: depth }, () => pick(NAMES)).join('/');
  };
  const size = (): number => (r() < 0.1 ? Math.floor(r() * 300_000) : r() < 0.5 ? Math.floor(r() * 3000) : Math.floor(r() * 20_000));
  const ops: Op[] = [];
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.16) ops.push({ op: 'mkdir', p: p(), mode: pick([0o755, 0o700, 0o2775]) });
    else if (k < 0.30) ops.push({ op: 'writeFile', p: p(), size: size(), seed: i });
    else if (k < 0.35) ops.push({ op: 'appendFile', p: p(), size: size(), seed: i });
    else if (k < 0.40) ops.push({ op: 'pwrite', p: p(), pos: Math.floor(r() * 400_000), size: size(), seed: i });
    else if (k < 0.45) ops.push({ op: 'truncate', p: p(), len: Math.floor(r() * 300_000) });
    else if (k < 0.52) ops.push({ op: 'unlink', p: p() });
    else if (k < 0.58) ops.push({ op: 'rmdir', p: p() });
    else if (k < 0.68) ops.push({ op: 'rename', p: p(), q: p() });
    else if (k < 0.73) ops.push({ op: 'link', p: p(), q: p() });
    else if (k < 0.77) ops.push({ op: 'symlink', target: pick(NAMES) + (r() < 0.3 ? '/' + pick(NAMES) : ''), p: p() });
    else if (k < 0.82) ops.push({ op: 'chmod', p: p(), mode: pick([0o644, 0o600, 0o4755, 0o1777, 0o000]) });
    else if (k < 0.85) ops.push({ op: 'chown', p: p(), uid: pick([0, 1000, 65534]), gid: pick([0, 100, 65534]) });
    else if (k < 0.89) ops.push({ op: 'utimes', p: p(), sec: Math.floor(r() * 2e9), nsec: Math.floor(r() * 1e9) });
    else if (k < 0.94) ops.push({ op: 'setxattr', p: p(), name: `user.${pick(NAMES)}`, value: 'v'.repeat(Math.floor(r() * 100)) });
    else if (k < 0.97) ops.push({ op: 'removexattr', p: p(), name: `user.${pick(NAMES)}` });
    else ops.push({ op: 'mkfifo', p: p() });
  }
  return ops;
}

async function code<T>(f: () => Promise<T> | T): Promise<string> {
  try {
    await f();
    return 'ok';
  } catch (e) {
    const c = (e as { code?: string }).code;
    if (!c) throw e;
    return c;
  }
}

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

async function onOurs(w: WritableFilesystem, o: Op): Promise<string> {
  switch (o.op) {
    case 'mkdir': return code(() => w.mkdir(o.p, { mode: o.mode }));
    case 'rmdir': return code(() => w.rmdir(o.p));
    case 'unlink': return code(() => w.unlink(o.p));
    case 'writeFile': return code(() => w.writeFile(o.p, bytes(o.size, o.seed)));
    case 'appendFile': return code(() => w.appendFile(o.p, bytes(o.size, o.seed)));
    case 'pwrite': return code(() => w.write(o.p, bytes(o.size, o.seed), o.pos));
    case 'truncate': return code(() => w.truncate(o.p, o.len));
    case 'rename': return code(() => w.rename(o.p, o.q));
    case 'link': return code(() => w.link(o.p, o.q));
    case 'symlink': return code(() => w.symlink(o.target, o.p));
    case 'chmod': return code(() => w.chmod(o.p, o.mode));
    case 'chown': return code(() => w.chown(o.p, o.uid, o.gid));
    case 'utimes': return code(() => w.utimes(o.p, { sec: BigInt(o.sec), nsec: o.nsec }, { sec: BigInt(o.sec), nsec: o.nsec }));
    case 'setxattr': return code(() => w.lsetxattr(o.p, o.name, o.value));
    case 'removexattr': return code(() => w.lremovexattr(o.p, o.name));
    case 'mkfifo': return code(() => w.mknod(o.p, 0o010644));
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
