/**
 * Import cases the fast path handles specially, each judged by the kernel
 * against what `cp -a` makes of the same input on the host: hard links
 * across directories, names already in DEST (merged directories, files
 * overwritten), `dir/.`, sparse files, xattrs, files over 128 MiB (split
 * into extents), directories listed in several parts, and commits in the
 * middle of an import (each must leave a consistent image).
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { mkfs } from '../../src/mkfs/index.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { importTree } from '../../src/fs/import.js';
import { isBtrfsError } from '../../src/util/errors.js';
import * as host from '../../src/util/host.js';
import { btrfsCheck, withMount, requireNativeOrSkip, sh, dumpTree } from '../helpers/kernel.js';
import { manifestOf, diffManifests } from '../helpers/manifest.js';

const MiB = 1024 * 1024;

describe('import: special cases, against cp -a through a kernel mount', function () {
  this.timeout(900_000);
  let dir: string;

  before(async function () {
    await requireNativeOrSkip(this);
    if (!host.nativeHostAvailable()) this.skip();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-import-cases-'));
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  async function image(name: string, sizeBytes = 256 * MiB): Promise<string> {
    const img = path.join(dir, name);
    await mkfs(img, { size: sizeBytes });
    return img;
  }

  async function expectClean(img: string): Promise<void> {
    const r = await btrfsCheck(img, ['--check-data-csum']);
    expect(r.ok, r.output).to.equal(true);
  }

  /** The image (or `sub` of it) through a kernel mount equals host directory `want`. */
  async function expectSame(img: string, want: string, sub = ''): Promise<void> {
    const m = await manifestOf(want);
    await withMount(img, { readonly: true }, async (mnt) => {
      expect(diffManifests(m, await manifestOf(path.join(mnt, sub)))).to.deep.equal([]);
    });
  }

  it('merges into names already there, links across directories, keeps xattrs and special files (dir/. onto an existing directory)', async () => {
    const pre = path.join(dir, 'pre');
    const src = path.join(dir, 'src');
    await sh(`mkdir -p ${pre}/d/deep ${pre}/other ${pre}/b && cd ${pre} && echo old > f1 && echo keep > d/keep && echo deep > d/deep/x && echo other > other/o
      echo 'replaced by a link' > b/h2 && touch -d @1300000000.5 b
      setfattr -n user.pre -v 1 d && touch -d @1300000000.25 d/deep d other .`);
    await sh(`mkdir -p ${src}/a ${src}/b/c ${src}/d/deep ${src}/d/new
      cd ${src}
      head -c 300000 /dev/urandom > f1 && echo linked > a/h1 && ln a/h1 b/h2 && ln a/h1 b/c/h3 && ln a/h1 d/h4
      head -c 70000 /dev/urandom > a/big1 && ln a/big1 d/new/big2 && ln f1 d/f1-too
      echo n > d/new/n && echo x2 > d/deep/x2 && ln -s ../a/h1 d/sl
      setfattr -n user.note -v hello a/h1 && setfattr -n trusted.t -v secret f1 && setfattr -n user.dir -v yes d && setfattr -n security.s -v sec d/new/n
      mknod d/cdev c 4 64 && mknod d/bdev b 8 3 && mkfifo d/fifo
      python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('d/sock')"
      chown 1234:5678 a/h1 && chmod 4751 a/h1 && chmod 2755 d/new && chmod 1777 b
      touch -h -d @1500000000.5 d/sl && touch -d @1400000000.123456789 d/deep d/new d a b/c b .`);
    // the referee: cp -a onto the same starting point on the host
    const want = path.join(dir, 'want');
    await sh(`cp -a ${pre} ${want} && cp -a ${src}/. ${want}/`);

    const img = await image('merge.img');
    const w = await WritableFilesystem.open(img);
    await importTree(w, [`${pre}/.`], '/');
    await w.commit();
    const r = await importTree(w, [`${src}/.`], '/');
    await w.close();
    expect(r.hardlinks).to.equal(5);
    await expectClean(img);
    await expectSame(img, want);
  });

  it('dir/. into a directory that does not exist yet makes it a copy of dir; a source under another name; several sources', async () => {
    const src = path.join(dir, 'src2');
    await sh(`mkdir -p ${src}/x/y && cd ${src} && echo 1 > x/y/f && echo 2 > g && ln g x/g2 && touch -d @1200000000 x/y x .`);
    const img = await image('dot.img');
    const w = await WritableFilesystem.open(img);
    await w.mkdir('/into');
    await importTree(w, [`${src}/.`], '/fresh');
    await importTree(w, [`${src}/x`], '/renamed');
    await importTree(w, [`${src}/g`, `${src}/x`, `${src}/./x/y/.`], '/into');
    await w.close();
    await expectClean(img);
    // the referee: the same three copies by cp -a on the host
    const want = path.join(dir, 'want2');
    await sh(`mkdir -p ${want}/into && cp -a ${src}/. ${want}/fresh && cp -a ${src}/x ${want}/renamed && cp -a ${src}/g ${src}/x ${src}/./x/y/. ${want}/into/`);
    for (const sub of ['fresh', 'renamed', 'into']) await expectSame(img, path.join(want, sub), sub);
  });

  for (const [csum, nodesize] of [['xxhash', 16384], ['sha256', 4096], ['blake2', 65536]] as const) {
    it(`data checksums of every kind verify (${csum}, ${nodesize}-byte nodes)`, async () => {
      const src = path.join(dir, `src-${csum}`);
      await sh(`mkdir -p ${src}/d && cd ${src} && head -c 5000 /dev/urandom > d/a && head -c 1500000 /dev/urandom > b && head -c 100 /dev/urandom > c
        head -c 1000 /dev/urandom | dd of=sp bs=1 seek=300000 status=none`);
      const img = path.join(dir, `${csum}.img`);
      await mkfs(img, { size: 256 * MiB, csum, nodesize });
      const w = await WritableFilesystem.open(img);
      await importTree(w, [src], '/', { contentsOnly: true });
      await w.close();
      const r = await btrfsCheck(img, ['--check-data-csum']);
      expect(r.ok, r.output).to.equal(true);
      await expectSame(img, src);
    });
  }

  it('a missing source fails before anything changes', async () => {
    const img = await image('missing.img');
    const w = await WritableFilesystem.open(img);
    await w.mkdir('/kept');
    const err = await importTree(w, [path.join(dir, 'src2'), path.join(dir, 'no-such')], '/kept').then(() => undefined, (e: unknown) => e);
    expect((err as NodeJS.ErrnoException)?.code).to.equal('ENOENT');
    expect(await w.readdir('/kept')).to.deep.equal([]);
    await w.close();
    await expectClean(img);
  });

  it('sparse files stay sparse; files over 128 MiB are split into extents of at most 128 MiB', async () => {
    const src = path.join(dir, 'src3');
    await sh(`mkdir -p ${src}
      cd ${src}
      truncate -s 9M sparse && printf x | dd of=sparse bs=1 seek=4000000 conv=notrunc status=none
      truncate -s 50M tail-hole && head -c 100000 /dev/urandom | dd of=tail-hole conv=notrunc status=none
      truncate -s 64M all-hole
      head -c 1000 /dev/urandom | dd of=lead-hole bs=1 seek=20000000 status=none
      head -c ${300 * MiB + 12345} /dev/urandom > huge && head -c ${128 * MiB} /dev/urandom > exact`);
    const img = await image('big.img', 1024 * MiB);
    const w = await WritableFilesystem.open(img);
    await importTree(w, [src], '/', { contentsOnly: true });
    await w.close();
    await expectClean(img);
    await expectSame(img, src);
    const inos = new Map<string, number>();
    await withMount(img, { readonly: true }, async (mnt) => {
      for (const [name, most] of [['sparse', 64 * 1024], ['tail-hole', 200 * 1024], ['all-hole', 0], ['lead-hole', 8192]] as const) {
        const st = await fs.stat(path.join(mnt, name));
        expect(st.blocks * 512, name).to.be.at.most(most);
      }
      for (const name of ['huge', 'exact']) inos.set(name, (await fs.stat(path.join(mnt, name))).ino);
    });
    const text = await dumpTree(img, ['-t', '5']);
    const extents = new Map<number, number[]>();
    for (const m of text.matchAll(/key \((\d+) EXTENT_DATA \d+\)[^\n]*\n[^\n]*type 1 \(regular\)\n\s*extent data disk byte \d+ nr (\d+)/g)) {
      const ino = Number(m[1]);
      extents.set(ino, [...(extents.get(ino) ?? []), Number(m[2])]);
    }
    const huge = extents.get(inos.get('huge')!) ?? [];
    expect(huge.length).to.be.at.least(3);
    expect(Math.max(...huge)).to.be.at.most(128 * MiB);
    expect(huge.reduce((a, b) => a + b, 0)).to.equal(Math.ceil((300 * MiB + 12345) / 4096) * 4096);
    const exact = extents.get(inos.get('exact')!) ?? [];
    expect(Math.max(...exact)).to.be.at.most(128 * MiB);
    expect(exact.reduce((a, b) => a + b, 0)).to.equal(128 * MiB);
  });

  it('commits in the middle of an import (directories listed in several parts too) each leave a consistent image', async () => {
    const src = path.join(dir, 'src4');
    // 2500 names in one directory: more than one part; files of every kind of size between commits
    await sh(`mkdir -p ${src}/many ${src}/sub/deeper
      cd ${src}
      for i in $(seq 1 2500); do echo "$i" > many/file-with-a-longish-name-$i; done
      for i in $(seq 1 40); do head -c $((i * 9000)) /dev/urandom > sub/f$i; ln sub/f$i sub/deeper/l$i; done
      head -c 3000000 /dev/urandom > sub/deeper/big && setfattr -n user.a -v b sub`);
    // all of it, committing every few blocks
    const img = await image('commits.img');
    const w = await WritableFilesystem.open(img);
    const seen: bigint[] = [];
    await importTree(w, [src], '/', {
      contentsOnly: true, commitBlocks: 4,
      onProgress: () => { seen.push(w.writer.info.sb.generation); },
    });
    await w.close();
    expect(new Set(seen).size, 'commits during the import').to.be.at.least(3);
    await expectClean(img);
    await expectSame(img, src);

    // stopped half way (after the first part of `many`): the image is the last commit, consistent
    const img2 = await image('stopped.img');
    const w2 = await WritableFilesystem.open(img2);
    let files = 0;
    const err = await importTree(w2, [src], '/', {
      contentsOnly: true, commitBlocks: 4,
      onProgress: (p) => { files = p.files; if (p.files === 2300) throw new Error('stop'); },
    }).then(() => undefined, (e: unknown) => e);
    expect((err as Error)?.message).to.equal('stop');
    expect(files).to.equal(2300);
    await w2.close();
    await expectClean(img2);
    await withMount(img2, { readonly: true }, async (mnt) => {
      const names = await fs.readdir(path.join(mnt, 'many'));
      expect(names.length).to.be.at.least(2000).and.lessThan(2300);
      for (const n of names.slice(0, 50)) expect(await fs.readFile(path.join(mnt, 'many', n), 'utf8')).to.equal(await fs.readFile(path.join(src, 'many', n), 'utf8'));
    });
    expect(isBtrfsError(err)).to.equal(false);
  });
});
