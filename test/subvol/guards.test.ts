/**
 * The seed's guards around deletion and read-write: a subvolume counted as
 * being sent (in this process through its root_item_lock, in another through
 * the image registry) cannot be deleted or made read-write; every refused or
 * failed attempt leaves the image and the DEAD flag as they were.
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { FileDevice } from '../../src/device/file-device.js';
import { MemoryDevice } from '../../src/device/memory-device.js';
import { FaultyDevice } from '../../src/device/faulty-device.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { OBJ, ROOT_FLAG } from '../../src/format/constants.js';
import { createSnapshot } from '../../src/subvol/create.js';
import { RootLocks } from '../../src/subvol/root-lock.js';
import { deleteSubvolume, setReadOnly, setDefaultSubvolume, syncDeleted, SEND_KIND, type SubvolContext } from '../../src/subvol/manage.js';
import { register } from '../../src/device/image-registry.js';
import { isBtrfsError } from '../../src/util/errors.js';
import { mkfs, btrfsCheck, requireNativeOrSkip, dumpTree } from '../helpers/kernel.js';
import { addRawFile, pseudoRandom } from '../helpers/raw-files.js';
import { builtPath } from '../helpers/fixtures.js';
import { errOf } from '../helpers/expect-error.js';

const MiB = 1024 * 1024;
const NOW = { sec: 1_800_000_000n, nsec: 7 };

async function sha(p: string): Promise<string> {
  return createHash('sha256').update(await fs.readFile(p)).digest('hex');
}

describe('subvolumes: the root_item_lock guards (seed)', function () {
  this.timeout(300_000);
  let dir: string;
  let img: string;

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-guard-'));
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  /** An image with files and read-only snapshots 256 ("snap") and 257 ("snap2") of the top level. */
  async function makeImage(name: string): Promise<string> {
    const p = path.join(dir, name);
    await mkfs(p, 256 * MiB);
    const w = await FsWriter.open(await FileDevice.open(p, {}), { now: () => NOW });
    let t = w.transaction();
    for (let i = 0; i < 300; i++) await addRawFile(t, `f${i}`, i % 10 === 0 ? pseudoRandom(8192, i + 1) : Buffer.alloc(0));
    await w.commit();
    t = w.transaction();
    await createSnapshot(t, OBJ.FS_TREE, { parentTree: OBJ.FS_TREE, parentDir: 256n, name: Buffer.from('snap') }, NOW, { readonly: true });
    await w.commit();
    t = w.transaction();
    await createSnapshot(t, OBJ.FS_TREE, { parentTree: OBJ.FS_TREE, parentDir: 256n, name: Buffer.from('snap2') }, NOW, { readonly: true });
    await w.commit();
    await w.close();
    return p;
  }

  async function open(p: string): Promise<SubvolContext & { close(): Promise<void> }> {
    const writer = await FsWriter.open(await FileDevice.open(p, {}), { now: () => NOW });
    const warnings: string[] = [];
    return { writer, locks: new RootLocks(), imagePath: p, now: () => NOW, warn: (m) => warnings.push(m), close: () => writer.close() };
  }

  it('in this process: delete and read-write are EPERM while a send is counted, change nothing, and work after it', async () => {
    img = await makeImage('inproc.img');
    const ctx = await open(img);
    try {
      const before = await sha(img);
      const lock = ctx.locks.get(256n, ROOT_FLAG.SUBVOL_RDONLY);
      lock.critical((s) => { s.sendInProgress++; });
      const del = await errOf(deleteSubvolume(ctx, 256n));
      expect(isBtrfsError(del, 'EPERM'), String(del)).to.equal(true);
      expect(lock.peek().flags & ROOT_FLAG.SUBVOL_DEAD).to.equal(0n);
      const rw = await errOf(setReadOnly(ctx, 256n, false));
      expect(isBtrfsError(rw, 'EPERM'), String(rw)).to.equal(true);
      expect(await sha(img)).to.equal(before);
      // the other snapshot is not protected
      await deleteSubvolume(ctx, 257n);
      lock.critical((s) => { s.sendInProgress--; });
      await setReadOnly(ctx, 256n, false);
      await setReadOnly(ctx, 256n, true);
      await deleteSubvolume(ctx, 256n);
    } finally {
      await ctx.close();
    }
    const r = await btrfsCheck(img);
    expect(r.ok, r.output).to.equal(true);
    const roots = await dumpTree(img, ['-t', '1']);
    // deleted, not yet cleaned: DEAD|RDONLY, refs 0, an orphan item — what the kernel leaves
    expect(roots).to.match(/ORPHAN ORPHAN_ITEM 256/);
    expect(roots).to.match(/flags 0x1000000000001\(RDONLY\) refs 0/);
  });

  it('the kernel refusals: top level and default subvolume EPERM, a subvolume holding others ENOTEMPTY', async () => {
    const p = await makeImage('refuse.img');
    const ctx = await open(p);
    try {
      expect(isBtrfsError(await errOf(deleteSubvolume(ctx, 5n)), 'EPERM')).to.equal(true);
      await setDefaultSubvolume(ctx, 256n);
      expect(isBtrfsError(await errOf(deleteSubvolume(ctx, 256n)), 'EPERM')).to.equal(true);
      await setDefaultSubvolume(ctx, 5n);
      const t = ctx.writer.transaction();
      await createSnapshot(t, 257n, { parentTree: 257n, parentDir: 256n, name: Buffer.from('inner') }, NOW);
      await ctx.writer.commit();
      expect(isBtrfsError(await errOf(deleteSubvolume(ctx, 257n)), 'ENOTEMPTY')).to.equal(true);
      expect(isBtrfsError(await errOf(deleteSubvolume(ctx, 999n)), 'ENOENT')).to.equal(true);
      await deleteSubvolume(ctx, 258n);
      await deleteSubvolume(ctx, 257n);
      await syncDeleted(ctx, { budget: 2 });
    } finally {
      await ctx.close();
    }
    const r = await btrfsCheck(p);
    expect(r.ok, r.output).to.equal(true);
    expect(await dumpTree(p, ['-t', '1'])).to.not.match(/ORPHAN_ITEM/);
  });

  it('another process sending: EPERM until it ends or dies; a killed sender is recovered', async () => {
    const p = await makeImage('xproc.img');
    const script = path.join(dir, 'hold.mjs');
    const reg = builtPath('src/device/image-registry.js');
    await fs.writeFile(script, `import { register } from ${JSON.stringify(reg)};\nawait register(process.argv[2], ${JSON.stringify(SEND_KIND)}, { roots: ['256'] });\nconsole.log('ready');\nsetInterval(() => {}, 1000);\n`);
    const child = spawn(process.execPath, [script, p], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve(); });
        child.on('exit', (c) => reject(new Error(`holder exited ${c}`)));
      });
      const ctx = await open(p);
      try {
        const before = await sha(p);
        expect(isBtrfsError(await errOf(deleteSubvolume(ctx, 256n)), 'EPERM')).to.equal(true);
        expect(isBtrfsError(await errOf(setReadOnly(ctx, 256n, false)), 'EPERM')).to.equal(true);
        expect(await sha(p)).to.equal(before);
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        await deleteSubvolume(ctx, 256n);
      } finally {
        await ctx.close();
      }
    } finally {
      child.kill('SIGKILL');
    }
    const r = await btrfsCheck(p);
    expect(r.ok, r.output).to.equal(true);
  });

  it('a registration from this process counts too, and releasing it lifts the guard', async () => {
    const p = await makeImage('selfreg.img');
    const ctx = await open(p);
    try {
      const handle = await register(p, SEND_KIND, { roots: ['257'] });
      expect(isBtrfsError(await errOf(deleteSubvolume(ctx, 257n)), 'EPERM')).to.equal(true);
      await handle.release();
      await deleteSubvolume(ctx, 257n);
    } finally {
      await ctx.close();
    }
  });

  it('a deletion whose commit fails clears DEAD again and leaves the image at its last commit', async () => {
    const p = await makeImage('fail.img');
    const bytes = await fs.readFile(p);
    const dev = new FaultyDevice(MemoryDevice.fromBuffer(bytes), { sectorSize: 4096 });
    const writer = await FsWriter.open(dev, { now: () => NOW });
    const ctx: SubvolContext = { writer, locks: new RootLocks(), now: () => NOW };
    try {
      dev.injectFault({ op: 'flush', nth: 1 });
      const e = await errOf(deleteSubvolume(ctx, 256n));
      expect(isBtrfsError(e, 'EIO'), String(e)).to.equal(true);
      expect(ctx.locks.peek(256n)!.peek().flags & ROOT_FLAG.SUBVOL_DEAD).to.equal(0n);
      const crashed = await dev.crashImage({ keep: 0 });
      const out = path.join(dir, 'fail-after.img');
      await fs.writeFile(out, crashed);
      const r = await btrfsCheck(out);
      expect(r.ok, r.output).to.equal(true);
      expect(await dumpTree(out, ['-t', '1'])).to.not.match(/ORPHAN_ITEM/);
    } finally {
      await writer.close();
    }
  });
});
