/**
 * Snapshots share their source's blocks; writes on either side copy what
 * they change and keep the extent tree's references exact (normal and
 * full backrefs), as btrfs check and the kernel judge.
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { FileDevice } from '../../src/device/file-device.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { OBJ } from '../../src/format/constants.js';
import { createSnapshot, createSubvolume } from '../../src/subvol/create.js';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { mkfs, btrfsCheck, withMount, requireNativeOrSkip, dumpTree } from '../helpers/kernel.js';
import { addRawFile, removeRawFile, pseudoRandom, type RawFile, type RawDir } from '../helpers/raw-files.js';

const MiB = 1024 * 1024;
const NOW = { sec: 1_800_000_000n, nsec: 42 };

async function expectClean(img: string): Promise<void> {
  const ours = await checkImage(img);
  expect(ours.findings.filter((f) => f.severity === 'error').map(formatFinding), 'tsbtrfs check').to.deep.equal([]);
  const progs = await btrfsCheck(img);
  expect(progs.ok, progs.output).to.equal(true);
}

async function kernelDir(dir: string, files: Map<string, RawFile>, extra: string[] = []): Promise<void> {
  expect((await fs.readdir(dir)).sort()).to.deep.equal([...files.keys(), ...extra].sort());
  for (const f of files.values()) {
    const data = await fs.readFile(path.join(dir, f.name));
    expect(createHash('sha256').update(data).digest('hex'), f.name).to.equal(f.sha256);
  }
}

describe('subvolumes: snapshots share blocks, copy on write', function () {
  this.timeout(600_000);
  let dir: string;

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-snap-'));
  });
  after(async () => {
    if (dir && !process.env.KEEP) await fs.rm(dir, { recursive: true, force: true });
  });

  for (const nodesize of [16384, 4096]) it(`snapshot of a multi-level tree, then changes on both sides and a snapshot of the snapshot (nodesize ${nodesize})`, async () => {
    const img = path.join(dir, `snap-${nodesize}.img`);
    await mkfs(img, 512 * MiB, ['-n', String(nodesize)]);
    const top = new Map<string, RawFile>();
    const w = await FsWriter.open(await FileDevice.open(img, {}), { now: () => NOW });
    let snapFiles = new Map<string, RawFile>();
    let snap2Files = new Map<string, RawFile>();
    try {
      let t = w.transaction();
      for (let i = 0; i < 2500; i++) {
        const f = await addRawFile(t, `e${i}`, i % 25 === 0 ? pseudoRandom(4096 * (1 + (i % 9)), i + 3) : Buffer.alloc(0), 8192);
        top.set(f.name, f);
      }
      await w.commit();
      t = w.transaction();
      const snap = await createSnapshot(t, OBJ.FS_TREE, { parentTree: OBJ.FS_TREE, parentDir: 256n, name: Buffer.from('snap') }, NOW);
      await w.commit();
      const usedAfterSnap = w.space.bytesUsed;
      const sAt: RawDir = { tree: snap, dir: 256n };
      snapFiles = new Map([...top].map(([n, f]) => [n, { ...f, at: sAt }]));
      t = w.transaction();
      for (let i = 0; i < 2500; i += 3) {
        await removeRawFile(t, top.get(`e${i}`)!);
        top.delete(`e${i}`);
      }
      for (let i = 1; i < 2500; i += 5) {
        await removeRawFile(t, snapFiles.get(`e${i}`)!);
        snapFiles.delete(`e${i}`);
      }
      for (let i = 0; i < 50; i++) {
        const a = await addRawFile(t, `top-new-${i}`, pseudoRandom(8192, 900 + i));
        top.set(a.name, a);
        const b = await addRawFile(t, `snap-new-${i}`, pseudoRandom(4096, 700 + i), 4096, sAt);
        snapFiles.set(b.name, b);
      }
      await w.commit();
      t = w.transaction();
      const snap2 = await createSnapshot(t, snap, { parentTree: snap, parentDir: 256n, name: Buffer.from('inner') }, NOW, { readonly: true });
      const sub = await createSubvolume(t, { parentTree: OBJ.FS_TREE, parentDir: 256n, name: Buffer.from('fresh') }, NOW);
      await w.commit();
      snap2Files = new Map([...snapFiles].map(([n, f]) => [n, { ...f, at: { tree: snap2, dir: 256n } }]));
      t = w.transaction();
      for (let i = 2; i < 2500; i += 7) {
        const f = snapFiles.get(`e${i}`);
        if (f) { await removeRawFile(t, f); snapFiles.delete(f.name); }
      }
      const inSub = await addRawFile(t, 'in-sub', pseudoRandom(12288, 5), 4096, { tree: sub, dir: 256n });
      await w.commit();
      expect(usedAfterSnap > 0n).to.equal(true);
      await w.close();
      await expectClean(img);
      // the shared path really ran: blocks turned over to parent-based refs
      const ext = await dumpTree(img, ['-t', '2']);
      expect(ext).to.match(/FULL_BACKREF/);
      expect(ext).to.match(/shared data backref/);
      if (nodesize === 4096) expect(ext).to.match(/shared block backref/);
      await withMount(img, {}, async (mnt) => {
        await kernelDir(mnt, top, ['snap', 'fresh']);
        await kernelDir(path.join(mnt, 'snap'), snapFiles, ['inner']);
        await kernelDir(path.join(mnt, 'snap', 'inner'), snap2Files);
        await kernelDir(path.join(mnt, 'fresh'), new Map([[inSub.name, inSub]]));
      });
      await expectClean(img);
    } finally {
      await w.close();
    }
  });
});
