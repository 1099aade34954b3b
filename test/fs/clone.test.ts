/**
 * Reflinks (WritableFilesystem.clone, fs/clone-range.ts): content equal,
 * extents shared rather than copied, kernel errnos for bad ranges, and the
 * case that once broke the engine: an extent cloned to a file offset below
 * its own offset inside the extent (the data reference's offset wraps below
 * zero, as in the kernel), in a leaf a snapshot later shares and copies.
 */
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { mkfs } from '../../src/mkfs/index.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import { FileDevice } from '../../src/device/file-device.js';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { BtrfsError } from '../../src/util/errors.js';
import { btrfsCheck, nativeAvailable, withMount } from '../helpers/kernel.js';
import { spawnSync } from 'node:child_process';

const KiB = 1024;
const MiB = 1024 * KiB;
const haveProgs = spawnSync('btrfs', ['--version']).status === 0;

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i += 4) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function bytesUsed(img: string): Promise<bigint> {
  const dev = await FileDevice.open(img, { readOnly: true });
  try {
    return (await FsInfo.open(dev)).sb.bytes_used;
  } finally {
    await dev.close();
  }
}

async function expectClean(img: string): Promise<void> {
  const ours = await checkImage(img);
  expect(ours.findings.filter((f) => f.severity === 'error').map(formatFinding), 'tsbtrfs check').to.deep.equal([]);
  if (haveProgs) {
    const r = await btrfsCheck(img);
    expect(r.ok && r.problems.length === 0, r.output).to.equal(true);
  }
}

describe('fs: clone (reflink)', function () {
  this.timeout(300_000);
  let dir: string;
  before(async () => { dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-clone-')); });
  after(async () => { if (dir) await fsp.rm(dir, { recursive: true, force: true }); });

  it('shares extents within a file, across files and across subvolumes; data is not copied', async () => {
    const img = path.join(dir, 'share.img');
    await mkfs(img, { size: 256 * MiB });
    const a = pattern(8 * MiB, 1);
    let fs = await WritableFilesystem.open(img);
    try {
      await fs.createSubvolume('/sv');
      await fs.writeFile('/a', a);
    } finally {
      await fs.close();
    }
    const before = await bytesUsed(img);
    fs = await WritableFilesystem.open(img);
    try {
      await fs.writeFile('/b', '');
      await fs.clone('/a', '/b');
      await fs.writeFile('/sv/c', Buffer.concat([Buffer.from('head'), Buffer.alloc(64 * KiB - 4)]));
      await fs.clone('/a', '/sv/c', { srcOffset: 1 * MiB, dstOffset: 64 * KiB, length: 2 * MiB });
      await fs.clone('/a', '/a', { srcOffset: 0, dstOffset: 8 * MiB, length: 4 * MiB });
    } finally {
      await fs.close();
    }
    const after = await bytesUsed(img);
    expect(Number(after - before), 'bytes used grow by metadata only').to.be.below(1 * MiB);
    const r = await Filesystem.open(img);
    try {
      expect(sha(await r.readFile('/b') as Buffer)).to.equal(sha(a));
      const c = await r.readFile('/sv/c') as Buffer;
      expect(c.length).to.equal(64 * KiB + 2 * MiB);
      expect(c.subarray(0, 4).toString()).to.equal('head');
      expect(c.subarray(4, 64 * KiB).equals(Buffer.alloc(64 * KiB - 4))).to.equal(true);
      expect(sha(c.subarray(64 * KiB))).to.equal(sha(a.subarray(1 * MiB, 3 * MiB)));
      expect(sha(await r.readFile('/a') as Buffer)).to.equal(sha(Buffer.concat([a, a.subarray(0, 4 * MiB)])));
    } finally {
      await r.close();
    }
    await expectClean(img);
    if ((await nativeAvailable()).ok) {
      await withMount(img, { readonly: true }, async (m) => {
        expect(sha(await fsp.readFile(path.join(m, 'b')))).to.equal(sha(a));
        expect(sha(await fsp.readFile(path.join(m, 'a')))).to.equal(sha(Buffer.concat([a, a.subarray(0, 4 * MiB)])));
      });
    }
  });

  it('an extent cloned below its own offset (a wrapped reference offset), then shared by a snapshot and changed on both sides', async () => {
    const img = path.join(dir, 'wrap.img');
    await mkfs(img, { size: 128 * MiB });
    const fs = await WritableFilesystem.open(img);
    try {
      await fs.createSubvolume('/vol');
      await fs.writeFile('/vol/a', pattern(64 * KiB, 2));
      // many small files so the file extents span several leaves
      for (let i = 0; i < 300; i++) await fs.writeFile(`/vol/f${i}`, pattern(8 * KiB, i + 10));
      await fs.writeFile('/vol/b', '');
      await fs.clone('/vol/a', '/vol/b', { srcOffset: 32 * KiB, dstOffset: 0, length: 16 * KiB });
      await fs.commit();
      await fs.snapshot('/vol', '/snap');
      await fs.write('/snap/b', Buffer.from('changed in the snapshot'), 4 * KiB);
      await fs.write('/vol/b', Buffer.from('changed in the source'), 8 * KiB);
      await fs.commit();
      await fs.unlink('/vol/b');
      await fs.commit();
    } finally {
      await fs.close();
    }
    await expectClean(img);
  });

  it('refuses what the kernel refuses: unaligned ranges, ranges past the end, overlap within a file (EINVAL)', async () => {
    const img = path.join(dir, 'errs.img');
    await mkfs(img, { size: 128 * MiB });
    const fs = await WritableFilesystem.open(img);
    try {
      await fs.writeFile('/a', pattern(64 * KiB + 100, 3));
      await fs.writeFile('/b', '');
      const refuse = async (o: { srcOffset?: number; dstOffset?: number; length?: number }, src = '/a', dst = '/b') => {
        const e = await fs.clone(src, dst, o).then(() => undefined, (x: unknown) => x);
        expect(e, JSON.stringify(o)).to.be.instanceOf(BtrfsError);
        expect((e as BtrfsError).code).to.equal('EINVAL');
      };
      await refuse({ srcOffset: 100 });
      await refuse({ dstOffset: 100 });
      await refuse({ length: 1000 });
      await refuse({ srcOffset: 4096, length: 64 * KiB });
      await refuse({ srcOffset: 0, dstOffset: 4096, length: 8192 }, '/a', '/a');
      // the source's unaligned end is fine
      await fs.clone('/a', '/b', { srcOffset: 60 * KiB, length: 4 * KiB + 100 });
      expect((await fs.stat('/b')).size).to.equal(4 * KiB + 100);
    } finally {
      await fs.close();
    }
    await expectClean(img);
  });
});
