/**
 * Import (mkfs -r, put) judged by the kernel: a random host tree copied
 * into an image must look, through a kernel mount, exactly like the source
 * (data, mode, owner, ns mtimes, xattrs, links, devices, sparse files).
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { mkfs } from '../../src/mkfs/index.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { importTree } from '../../src/fs/import.js';
import * as host from '../../src/util/host.js';
import { btrfsCheck, withMount, requireNativeOrSkip, sh } from '../helpers/kernel.js';
import { manifestOf, diffManifests } from '../helpers/manifest.js';
import { Rng, TreeGenerator } from '../native/random-tree.js';

const MiB = 1024 * 1024;

describe('import: host trees into an image, as the kernel sees them', function () {
  this.timeout(600_000);
  let dir: string;

  before(async function () {
    await requireNativeOrSkip(this);
    if (!host.nativeHostAvailable()) this.skip();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-import-'));
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const seed = Number(process.env.TSBTRFS_SEED ?? Date.now() % 100000);
  it(`mkfs -r of a random tree (seed ${seed}) and put into a subdirectory`, async () => {
    const src = path.join(dir, 'src');
    await fs.mkdir(src);
    const gen = new TreeGenerator(src, new Rng(seed), { dataBudget: 24 * MiB });
    await gen.populate(src, 0, 14);
    await sh(`cd ${src} && truncate -s 9M sparse && printf x | dd of=sparse bs=1 seek=4000000 conv=notrunc status=none && mknod cdev c 4 64 && mknod bdev b 8 3 && mkfifo fifo && echo a > h1 && ln h1 h2 && ln h1 h3 && chown 1234:5678 h1 && chmod 4751 h1 && setfattr -n user.note -v hello h1 && ln -s dangling dl && touch -h -d @1500000000.5 dl && touch -d @1400000000.123456789 .`);
    const img = path.join(dir, 'img');
    await mkfs(img, { size: 256 * MiB });
    const w = await WritableFilesystem.open(img);
    await importTree(w, [src], '/', { contentsOnly: true });
    await w.close();
    // the same tree put into a directory of a second image (cp -a SRC DEST/)
    const img2 = path.join(dir, 'img2');
    await mkfs(img2, { size: 256 * MiB });
    const w2 = await WritableFilesystem.open(img2);
    await w2.mkdir('/again');
    await importTree(w2, [src], '/again');
    await w2.close();
    const r = await btrfsCheck(img);
    expect(r.ok, r.output).to.equal(true);
    const want = await manifestOf(src);
    await withMount(img, { readonly: true }, async (mnt) => {
      expect(diffManifests(want, await manifestOf(mnt)), 'root import').to.deep.equal([]);
      // sparse stays sparse
      const st = await fs.stat(path.join(mnt, 'sparse'));
      expect(st.blocks * 512).to.be.lessThan(64 * 1024);
    });
    await withMount(img2, { readonly: true }, async (mnt) => {
      expect(diffManifests(want, await manifestOf(path.join(mnt, 'again', 'src'))), 'put into a directory').to.deep.equal([]);
    });
    const r2 = await btrfsCheck(img2);
    expect(r2.ok, r2.output).to.equal(true);
  });
});
