/**
 * The write engine below the POSIX layer: transactions, the extent tree,
 * block groups, the free space tree and new chunks, judged by btrfs check,
 * our own check and the kernel reading the files back.
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { FileDevice } from '../../src/device/file-device.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { isBtrfsError } from '../../src/util/errors.js';
import { mkfs, withMount, requireNativeOrSkip } from '../helpers/kernel.js';
import { addRawFile, removeRawFile, pseudoRandom, type RawFile } from '../helpers/raw-files.js';
import { expectClean } from '../helpers/strict.js';

const MiB = 1024 * 1024;


async function expectFiles(img: string, files: Map<string, RawFile>): Promise<void> {
  const fsys = await Filesystem.open(img);
  try {
    const names = (await fsys.readdir('/')).sort();
    expect(names).to.deep.equal([...files.keys()].sort());
    for (const f of files.values()) {
      const data = await fsys.readFile('/' + f.name) as Buffer;
      expect(createHash('sha256').update(data).digest('hex'), f.name).to.equal(f.sha256);
    }
  } finally {
    await fsys.close();
  }
}

async function kernelSees(img: string, files: Map<string, RawFile>): Promise<void> {
  await withMount(img, {}, async (mnt) => {
    expect((await fs.readdir(mnt)).sort()).to.deep.equal([...files.keys()].sort());
    for (const f of files.values()) {
      const data = await fs.readFile(path.join(mnt, f.name));
      expect(createHash('sha256').update(data).digest('hex'), f.name).to.equal(f.sha256);
    }
  });
}

describe('write engine: transactions over a kernel-made image', function () {
  this.timeout(600_000);
  let dir: string;

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-engine-'));
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('thousands of files with data, several commits, deletions: btrfs check clean, kernel reads them', async () => {
    const img = path.join(dir, 'many.img');
    await mkfs(img, 512 * MiB);
    const files = new Map<string, RawFile>();
    const w = await FsWriter.open(await FileDevice.open(img, {}));
    try {
      let t = w.transaction();
      for (let i = 0; i < 3000; i++) {
        const f = await addRawFile(t, `empty-${i}`, Buffer.alloc(0));
        files.set(f.name, f);
      }
      for (let i = 0; i < 150; i++) {
        const f = await addRawFile(t, `data-${i}`, pseudoRandom(4096 * (1 + (i % 40)), i + 1), 64 * 1024);
        files.set(f.name, f);
      }
      const s1 = await w.commit();
      expect(s1!.rounds).to.be.lessThan(10);
      t = w.transaction();
      for (let i = 0; i < 3000; i += 2) {
        await removeRawFile(t, files.get(`empty-${i}`)!);
        files.delete(`empty-${i}`);
      }
      for (let i = 0; i < 150; i += 3) {
        await removeRawFile(t, files.get(`data-${i}`)!);
        files.delete(`data-${i}`);
      }
      await w.commit();
      t = w.transaction();
      for (let i = 0; i < 40; i++) {
        const f = await addRawFile(t, `again-${i}`, pseudoRandom(4096 * (3 + i), 1000 + i), 32 * 1024);
        files.set(f.name, f);
      }
      await w.commit();
    } finally {
      await w.close();
    }
    await expectClean(img);
    await expectFiles(img, files);
    await kernelSees(img, files);
    await expectClean(img);
  });

  it('fills data chunks and allocates new ones; frees everything again', async () => {
    const img = path.join(dir, 'chunks.img');
    await mkfs(img, 1024 * MiB);
    const files = new Map<string, RawFile>();
    const w = await FsWriter.open(await FileDevice.open(img, {}));
    const groupsBefore = w.space.all().length;
    try {
      const t = w.transaction();
      for (let i = 0; i < 12; i++) {
        const f = await addRawFile(t, `big-${i}`, pseudoRandom(24 * MiB, 77 + i), 8 * MiB);
        files.set(f.name, f);
      }
      await w.commit();
      expect(w.space.all().length).to.be.greaterThan(groupsBefore);
    } finally {
      await w.close();
    }
    await expectClean(img);
    await kernelSees(img, files);
    const w2 = await FsWriter.open(await FileDevice.open(img, {}));
    try {
      const t = w2.transaction();
      for (const f of files.values()) await removeRawFile(t, f);
      files.clear();
      await w2.commit();
      const data = w2.space.all().filter((g) => g.kind === 'data');
      expect(data.reduce((n, g) => n + g.used, 0n)).to.equal(0n);
    } finally {
      await w2.close();
    }
    await expectClean(img);
    await expectFiles(img, files);
  });

  it('a full disk is a clean ENOSPC and the image stays at its last commit', async () => {
    const img = path.join(dir, 'full.img');
    await mkfs(img, 160 * MiB);
    const files = new Map<string, RawFile>();
    const w = await FsWriter.open(await FileDevice.open(img, {}));
    let err: unknown;
    try {
      let t = w.transaction();
      const f0 = await addRawFile(t, 'kept', pseudoRandom(8 * MiB, 5));
      files.set(f0.name, f0);
      await w.commit();
      t = w.transaction();
      try {
        for (let i = 0; i < 1000; i++) await addRawFile(t, `fill-${i}`, pseudoRandom(4 * MiB, i + 9), 4 * MiB);
      } catch (e) {
        err = e;
      }
      expect(isBtrfsError(err, 'ENOSPC'), String(err)).to.equal(true);
      await w.abort();
    } finally {
      await w.close();
    }
    await expectClean(img);
    await expectFiles(img, files);
  });

  it('a second writer is refused; a read-only open never changes a byte', async () => {
    const img = path.join(dir, 'lock.img');
    await mkfs(img, 256 * MiB);
    const before = createHash('sha256').update(await fs.readFile(img)).digest('hex');
    const w = await FsWriter.open(await FileDevice.open(img, {}));
    try {
      let refused: unknown;
      try {
        await FileDevice.open(img, {});
      } catch (e) {
        refused = e;
      }
      expect(isBtrfsError(refused), String(refused)).to.equal(true);
      expect(String(refused)).to.match(/in use|lock/i);
    } finally {
      await w.close();
    }
    const ro = await FileDevice.open(img, { readOnly: true });
    let rofail: unknown;
    try {
      await FsWriter.open(ro);
    } catch (e) {
      rofail = e;
    } finally {
      await ro.close();
    }
    expect(isBtrfsError(rofail, 'EROFS')).to.equal(true);
    const fsys = await Filesystem.open(img);
    await fsys.readdir('/');
    await fsys.close();
    // a transaction that only read commits nothing
    const w2 = await FsWriter.open(await FileDevice.open(img, {}));
    const t = w2.transaction();
    for await (const _ of t.iter(5n)) void _;
    expect(await w2.commit()).to.equal(undefined);
    await w2.close();
    expect(createHash('sha256').update(await fs.readFile(img)).digest('hex')).to.equal(before);
  });
});
