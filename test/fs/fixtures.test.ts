/**
 * The fixture tier: images made by the real kernel (native-fixtures/), each
 * with a manifest of what a kernel mount showed. tsbtrfs must see exactly
 * that, through the library and through `get` onto the host. No root needed.
 */
import { expect } from 'chai';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Filesystem } from '../../src/fs/filesystem.js';
import { extract } from '../../src/fs/extract.js';
import { listFixtures, fixturePath, fixtureManifest, type FixtureManifest } from '../helpers/fixtures.js';
import { manifestOf, diffManifests } from '../helpers/manifest.js';
import { libraryManifest } from '../helpers/library-manifest.js';
import { requireNativeOrSkip, mkfs, withMount } from '../helpers/kernel.js';

const fixtures = await listFixtures();

describe('native fixtures: library view equals the kernel manifest', function () {
  this.timeout(600_000);
  for (const name of fixtures) {
    describe(name, () => {
      let fx: FixtureManifest;
      let img: string;
      before(async () => {
        fx = await fixtureManifest(name);
        img = await fixturePath(name);
      });

      it('tree: every path, type, mode, owner, size, sha256, target, xattrs, nlink, rdev, ns mtime, inode number and dir size', async () => {
        const fs = await Filesystem.open(img);
        try {
          const mine = await libraryManifest(fs);
          expect(diffManifests(fx.tree, mine, { compareIno: true, strictDirs: true, compareDevBoundary: true })).to.deep.equal([]);
        } finally {
          await fs.close();
        }
      });

      it('subvolumes: ids, paths, uuids, parents, received uuids, generations, ro flags', async () => {
        const fs = await Filesystem.open(img);
        try {
          const mine = (await fs.listSubvolumes()).filter((s) => s.id !== 5n && !s.deleted);
          const want = fx.subvolumes.map((s: any) => ({
            id: String(s.id), path: String(s.path).replace(/^<FS_TREE>\//, ''), uuid: s.uuid ?? null,
            parent_uuid: s.parent_uuid ?? null, received_uuid: s.received_uuid ?? null,
            generation: String(s.generation), top_level: String(s.top_level), ro: !!s.ro,
          }));
          const got = mine.map((s) => ({
            id: s.id.toString(), path: s.path.replace(/^\//, ''), uuid: s.uuid, parent_uuid: s.parentUuid,
            received_uuid: s.receivedUuid, generation: s.generation.toString(), top_level: s.parentId.toString(), ro: s.readOnly,
          }));
          const norm = (x: typeof got) => x.map((s) => ({ ...s, parent_uuid: s.parent_uuid === '-' ? null : s.parent_uuid, received_uuid: s.received_uuid === '-' ? null : s.received_uuid, uuid: s.uuid === '-' ? null : s.uuid })).sort((a, b) => Number(a.id) - Number(b.id));
          expect(norm(got)).to.deep.equal(norm(want));
          const deleted = (await fs.listSubvolumes()).filter((s) => s.deleted).map((s) => Number(s.id)).sort();
          expect(deleted).to.deep.equal([...fx.deleted_subvolumes].sort());
          expect(Number(await fs.getDefaultSubvolume())).to.equal(fx.default_subvolume);
        } finally {
          await fs.close();
        }
      });

    });
  }
});

/**
 * `get` onto a real btrfs mount: a btrfs destination can hold everything the
 * source holds (hundreds of xattrs, 60000-byte values, btrfs.compression),
 * which ext4 or tmpfs cannot, so nothing needs excusing in the comparison.
 */
describe('native fixtures: get / DEST reproduces the kernel view (extracting onto a kernel btrfs mount)', function () {
  this.timeout(600_000);
  let scratch: string;
  let work: string;
  before(async function () {
    await requireNativeOrSkip(this);
    work = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-get-'));
    scratch = path.join(work, 'scratch.img');
    await mkfs(scratch, 2 * 1024 * 1024 * 1024, ['-n', '65536']);
  });
  after(async () => {
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });
  for (const name of fixtures) {
    it(name, async () => {
      const fx = await fixtureManifest(name);
      const fs = await Filesystem.open(await fixturePath(name));
      try {
        await withMount(scratch, {}, async (mnt) => {
          const dest = path.join(mnt, name);
          const res = await extract(fs, '/', dest);
          expect(res.warnings).to.deep.equal([]);
          const got = await manifestOf(dest);
          await fsp.rm(dest, { recursive: true, force: true });
          expect(diffManifests(fx.tree, got, {})).to.deep.equal([]);
        });
      } finally {
        await fs.close();
      }
    });
  }
});

describe('paths: symlinks, .., subvolume views', () => {
  it('resolves .. across subvolume boundaries, follows symlinks in the middle of paths, and absolute targets from the view base', async () => {
    const name = 'subvols-snapshots-default-received';
    const fx = await fixtureManifest(name);
    const fs = await Filesystem.open(await fixturePath(name));
    try {
      const nestedPath = '/' + fx.subvolumes.find((s) => s.path === 'sv1/nested')!.path;
      expect((await fs.lstat(nestedPath)).isSubvolume()).to.equal(true);
      expect((await fs.lstat(`${nestedPath}/..`)).subvolume).to.equal(256n);
      expect(await fs.readdir(`${nestedPath}/../..`)).to.deep.equal(await fs.readdir('/'));
      const sv = await fs.at(256n);
      expect(await sv.readdir('/')).to.deep.equal(await fs.readdir('/sv1'));
      expect((await sv.lstat('/nested')).subvolume).to.equal(257n);
      await fs.at(99999n).then(() => expect.fail('expected ENOENT'), (e) => expect(e.code).to.equal('ENOENT'));
      for (const bad of ['/nope', '/sv1/nope/x']) {
        await fs.lstat(bad).then(() => expect.fail(bad), (e) => expect(e.code).to.equal('ENOENT'));
      }
      const file = Object.entries(fx.tree).find(([, e]) => e.type === 'file')![0];
      await fs.lstat(`${file}/x`).then(() => expect.fail('ENOTDIR'), (e) => expect(e.code).to.equal('ENOTDIR'));
      await fs.readdir(file).then(() => expect.fail('ENOTDIR'), (e) => expect(e.code).to.equal('ENOTDIR'));
    } finally {
      await fs.close();
    }
  });

  it('symlinks: followed by stat/readFile/readdir, not by lstat; dangling targets are ENOENT', async () => {
    const name = 'filetypes-links-modes-times';
    const fx = await fixtureManifest(name);
    const fs = await Filesystem.open(await fixturePath(name));
    try {
      let checked = 0;
      for (const [p, e] of Object.entries(fx.tree)) {
        if (e.type !== 'symlink') continue;
        expect((await fs.lstat(p)).isSymbolicLink()).to.equal(true);
        expect(await fs.readlink(p)).to.equal(e.target);
        const dir = p.slice(0, p.lastIndexOf('/')) || '/';
        const targetPath = e.target!.startsWith('/') ? e.target! : `${dir === '/' ? '' : dir}/${e.target}`;
        const target = fx.tree[targetPath.replace(/\/+/g, '/')];
        if (target?.type === 'file') {
          expect((await fs.readFile(p) as Buffer).length).to.equal(target.size);
          checked++;
        }
        if (target?.type === 'dir') {
          expect(await fs.readdir(p)).to.be.an('array');
          checked++;
        }
      }
      expect(checked, 'symlinks to files or dirs in the fixture').to.be.greaterThan(0);
      await fs.stat('/symlink-dangling-absolute').then(() => expect.fail('ENOENT'), (e) => expect(e.code).to.equal('ENOENT'));
      expect((await fs.lstat('/symlink-dangling-absolute')).isSymbolicLink()).to.equal(true);
      const inDir = (await fs.readdir('/dir'))[0];
      if (inDir) expect((await fs.lstat(`/symlink-to-dir/${inDir}`)).ino).to.equal((await fs.lstat(`/dir/${inDir}`)).ino);
    } finally {
      await fs.close();
    }
  });
});

describe('get keeps holes as holes', () => {
  it('a file that is one 1 MiB hole and one with data only at its end extract sparse', async () => {
    const fs = await Filesystem.open(await fixturePath('holes-prealloc'));
    const dest = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-sparse-'));
    try {
      await extract(fs, '/holes', dest, { preserveOwner: false });
      const only = await fsp.stat(path.join(dest, 'holes', 'hole-only-1M'));
      expect(only.size).to.equal(1048576);
      expect(only.blocks * 512).to.be.lessThan(64 * 1024);
      const end = await fsp.stat(path.join(dest, 'holes', 'data-at-end'));
      expect(end.size).to.equal(1048576);
      expect(end.blocks * 512).to.be.lessThan(end.size / 2);
    } finally {
      await fs.close();
      await fsp.rm(dest, { recursive: true, force: true });
    }
  });
});
