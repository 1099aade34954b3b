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
import { manifestOf, diffManifests, type Manifest } from '../helpers/manifest.js';
import { libraryManifest } from '../helpers/library-manifest.js';

const fixtures = await listFixtures();

/**
 * The kernel's stand-in for a subvolume entry with nothing behind it (a nested
 * subvolume seen from a snapshot of its parent) has ino 2 and the current time
 * as mtime when the kernel first looks at it: that time cannot be reproduced.
 */
function placeholderPaths(m: Manifest): Set<string> {
  return new Set(Object.entries(m).filter(([, e]) => e.ino === '2' && e.type === 'dir').map(([p]) => p));
}

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
          const ph = placeholderPaths(fx.tree);
          const diff = diffManifests(fx.tree, mine, { compareIno: true, strictDirs: true, compareDevBoundary: true });
          const real = diff.filter((d) => !(d.includes('mtime_ns') && [...ph].some((p) => d.startsWith(`${p}:`))));
          expect(real).to.deep.equal([]);
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

      it('get / DEST: the extracted host tree equals the kernel manifest', async function () {
        if (process.getuid?.() !== 0) this.skip();
        const dest = await fsp.mkdtemp(path.join(os.tmpdir(), `tsbtrfs-get-${name}-`));
        const fs = await Filesystem.open(img);
        try {
          await extract(fs, '/', dest, { onWarning: () => undefined });
          const got = await manifestOf(dest);
          const ph = placeholderPaths(fx.tree);
          const diff = diffManifests(fx.tree, got, {});
          const real = diff.filter((d) => !(d.includes('mtime_ns') && [...ph].some((p) => d.startsWith(`${p}:`))));
          expect(real).to.deep.equal([]);
        } finally {
          await fs.close();
          await fsp.rm(dest, { recursive: true, force: true });
        }
      });
    });
  }
});
