/**
 * Tests of the test helpers themselves: manifest.ts, kernel.ts, fixtures.ts.
 * The native parts skip loudly without root/btrfs/loop (fail with REQUIRE_NATIVE=1).
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { diffManifests, manifestOf, parseGetfattr, type Manifest } from './manifest.js';
import {
  btrfsCheck,
  checkOutputClean,
  mkfs,
  parseDumpSuper,
  parseSubvolumeList,
  requireNativeOrSkip,
  run,
  runOk,
  subvolumeList,
  withMount,
} from './kernel.js';
import { fixtureCheckOutput, fixtureManifest, fixturePath, listFixtures, type FixtureManifest } from './fixtures.js';

async function hashFile(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

function mountedAt(mnt: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mnt);
}

async function loopsFor(img: string): Promise<string> {
  return (await run('losetup', ['-j', img])).stdout.trim();
}

describe('test helpers', function () {
  this.timeout(300_000);

  describe('manifest', () => {
    let dir: string;
    before(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-manifest-'));
    });
    after(async () => {
      await fs.rm(dir, { recursive: true, force: true });
    });

    it('describes a tree with known content', async () => {
      await fs.mkdir(path.join(dir, 'd/e'), { recursive: true });
      await fs.writeFile(path.join(dir, 'd/hello'), 'hello\n');
      await fs.chmod(path.join(dir, 'd/hello'), 0o4751);
      await fs.symlink('hello', path.join(dir, 'd/link'));
      await fs.link(path.join(dir, 'd/hello'), path.join(dir, 'd/e/hard'));
      await fs.writeFile(path.join(dir, 'sparse'), '');
      await fs.truncate(path.join(dir, 'sparse'), 1 << 20);
      await runOk('mkfifo', [path.join(dir, 'fifo')]);
      // a socket file (python3 binds and exits, leaving the inode behind)
      await run('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path.join(dir, 'sock')]);
      await runOk('touch', ['-d', '2001-02-03 04:05:06.123456789 UTC', path.join(dir, 'd/hello')]);
      await runOk('touch', ['-h', '-d', '1960-01-01 00:00:00.5 UTC', path.join(dir, 'd/link')]);
      const xattrOk = (await run('setfattr', ['-n', 'user.k', '-v', '0x00ff', path.join(dir, 'd/hello')])).code === 0;
      await run('setfattr', ['-n', 'user.empty', path.join(dir, 'd/hello')]);
      const isRoot = process.getuid?.() === 0;
      if (isRoot) {
        await runOk('mknod', [path.join(dir, 'cdev'), 'c', '4095', '1048575']);
        await runOk('mknod', [path.join(dir, 'bdev'), 'b', '8', '1']);
        await fs.lchown(path.join(dir, 'd/link'), 1234, 5678);
      }

      const m = await manifestOf(dir);
      expect(m['/'].type).to.equal('dir');
      expect(m['/d'].type).to.equal('dir');
      expect(m['/d'].dir_size).to.be.a('number');
      expect(m['/d'].size).to.equal(undefined);
      const hello = m['/d/hello'];
      expect(hello).to.include({ type: 'file', mode: 0o4751, size: 6, nlink: 2, mtime_ns: '981173106123456789' });
      expect(hello.sha256).to.equal(createHash('sha256').update('hello\n').digest('hex'));
      expect(hello.hardlink_group).to.equal('/d/e/hard');
      expect(m['/d/e/hard'].hardlink_group).to.equal('/d/e/hard');
      expect(m['/d/link']).to.include({ type: 'symlink', target: 'hello', size: 5, mode: 0o777, mtime_ns: '-315619199500000000' });
      expect(m['/fifo'].type).to.equal('fifo');
      expect(m['/sparse']).to.include({ type: 'file', size: 1 << 20 });
      if (m['/sock']) expect(m['/sock'].type).to.equal('socket');
      if (xattrOk) expect(hello.xattrs).to.deep.equal({ 'user.k': 'AP8=', 'user.empty': '' });
      if (isRoot) {
        expect(m['/cdev']).to.deep.include({ type: 'chardev', rdev: { major: 4095, minor: 1048575 } });
        expect(m['/bdev']).to.deep.include({ type: 'blockdev', rdev: { major: 8, minor: 1 } });
        expect(m['/d/link']).to.include({ uid: 1234, gid: 5678 });
      }
      expect(Object.keys(m)).to.deep.equal([...Object.keys(m)].sort());

      // a manifest equals itself; changes are reported readably
      expect(diffManifests(m, m)).to.deep.equal([]);
      const m2: Manifest = JSON.parse(JSON.stringify(m));
      m2['/d/hello'].mode = 0o644;
      m2['/d'].dir_size = 999;
      m2['/d'].nlink = 7;
      delete m2['/fifo'];
      m2['/extra'] = { ...m['/sparse'] };
      m2['/d/hello'].xattrs = { 'user.k': 'AAA=' };
      const d = diffManifests(m, m2);
      expect(d).to.include('/d/hello: mode expected 0o4751 got 0o644');
      expect(d).to.include('/fifo: missing fifo (only in expected)');
      expect(d).to.include('/extra: unexpected file (only in actual)');
      if (xattrOk) {
        expect(d).to.include('/d/hello: missing xattr user.empty');
        expect(d.some((s) => s.startsWith('/d/hello: xattr user.k expected'))).to.equal(true);
      }
      expect(d.some((s) => s.startsWith('/d:'))).to.equal(false, 'dir size/nlink are ignored by default');
      expect(diffManifests(m, m2, { strictDirs: true }).filter((s) => s.startsWith('/d:'))).to.have.length(2);
      expect(diffManifests(m, m2, { ignore: ['mode', 'xattrs'], excludePaths: ['/fifo', '/extra'] })).to.deep.equal([]);
    });

    it('parses getfattr quoting (octal escapes, empty values, UTF-8 names)', () => {
      const out = Buffer.from(
        '# file: /r/nl\\012x\n' +
          'user.k=0sdg==\n' +
          '\n' +
          '# file: /r/\u00fc\n' +
          'user.e=0s\n' +
          'user.we\\075ird=0sMQ==\n' +
          'user.noval\n' +
          '\n' +
          '# file: /r/back\\134slash\n' +
          'user.hex=0x00ff\n\n',
        'utf8',
      );
      const x = parseGetfattr(out);
      expect(x.get('/r/nl\nx')).to.deep.equal({ 'user.k': 'dg==' });
      expect(x.get('/r/\u00fc')).to.deep.equal({ 'user.e': '', 'user.we=ird': 'MQ==', 'user.noval': '' });
      expect(x.get('/r/back\\slash')).to.deep.equal({ 'user.hex': 'AP8=' });
    });
  });

  describe('kernel helpers (pure parsing)', () => {
    it('parses btrfs subvolume list -a -u -q -R -g -c', () => {
      const out =
        'ID 256 gen 15 cgen 7 top level 5 parent_uuid - received_uuid - uuid 18043195-6ffc-f843-aa29-2b58b8e7c217 path <FS_TREE>/sv1\n' +
        'ID 264 gen 16 cgen 12 top level 5 parent_uuid - received_uuid d129fa40-95d8-7e40-a73b-9d31bfee2870 uuid 9a27ce71-f71a-0940-b7e5-8bd294d16b63 path <FS_TREE>/received/snap with space\n';
      const l = parseSubvolumeList(out);
      expect(l).to.deep.equal([
        { id: 256, path: 'sv1', uuid: '18043195-6ffc-f843-aa29-2b58b8e7c217', parent_uuid: null, received_uuid: null, generation: 15, ogeneration: 7, top_level: 5 },
        { id: 264, path: 'received/snap with space', uuid: '9a27ce71-f71a-0940-b7e5-8bd294d16b63', parent_uuid: null, received_uuid: 'd129fa40-95d8-7e40-a73b-9d31bfee2870', generation: 16, ogeneration: 12, top_level: 5 },
      ]);
    });

    it('judges btrfs check output by its text, not only the exit code', () => {
      const good = '[1/7] checking root items\nOpening filesystem to check...\nfound 147456 bytes used, no error found\n';
      expect(checkOutputClean(good).ok).to.equal(true);
      const bad = good + 'ERROR: errors found in fs roots\n';
      expect(checkOutputClean(bad)).to.deep.equal({ ok: false, problems: ['ERROR: errors found in fs roots'] });
      expect(checkOutputClean('root 5 inode 257 errors 200, dir isize wrong\nfound 1 bytes used, no error found').ok).to.equal(false);
    });

    it('parses dump-super flags', () => {
      const s = parseDumpSuper(
        'csum_type\t\t2 (sha256)\nfsid\t\t\t7c33b4f6-88de-4ecd-8ada-0794b7862eac\ngeneration\t\t6\nsectorsize\t\t4096\nnodesize\t\t16384\n' +
          'compat_ro_flags\t\t0x3\n\t\t\t( FREE_SPACE_TREE |\n\t\t\t  FREE_SPACE_TREE_VALID )\nincompat_flags\t\t0x341\n\t\t\t( MIXED_BACKREF |\n\t\t\t  NO_HOLES )\n',
      );
      expect(s).to.deep.equal({
        uuid: '7c33b4f6-88de-4ecd-8ada-0794b7862eac', nodesize: 16384, sectorsize: 4096, csum_type: 'sha256', generation: 6,
        incompat_flags: ['MIXED_BACKREF', 'NO_HOLES'], compat_ro_flags: ['FREE_SPACE_TREE', 'FREE_SPACE_TREE_VALID'],
      });
    });
  });

  describe('kernel helpers (native)', () => {
    let dir: string;
    before(async function () {
      await requireNativeOrSkip(this);
      dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-kernel-'));
    });
    after(async () => {
      if (dir) await fs.rm(dir, { recursive: true, force: true });
    });

    it('mkfs + withMount + btrfsCheck + subvolumeList', async () => {
      const img = path.join(dir, 'a.img');
      await mkfs(img, 32 << 20, ['--mixed']);
      let seen = '';
      const got = await withMount(img, {}, async (mnt) => {
        seen = mnt;
        expect(mountedAt(mnt)).to.equal(true);
        await fs.writeFile(path.join(mnt, 'f'), 'data');
        await runOk('btrfs', ['subvolume', 'create', path.join(mnt, 'sv')]);
        return 42;
      });
      expect(got).to.equal(42);
      expect(mountedAt(seen)).to.equal(false);
      expect(await loopsFor(img)).to.equal('');
      await withMount(img, { readonly: true, options: 'subvolid=5' }, async (mnt) => {
        expect(await fs.readFile(path.join(mnt, 'f'), 'utf8')).to.equal('data');
        const l = await subvolumeList(mnt);
        expect(l.map((s) => [s.id, s.path, s.top_level, s.ro])).to.deep.equal([[256, 'sv', 5, false]]);
        expect(l[0].uuid).to.match(/^[0-9a-f-]{36}$/);
      });
      const c = await btrfsCheck(img);
      expect(c.ok, c.output).to.equal(true);
      expect(await loopsFor(img)).to.equal('');
    });

    it('withMount unmounts and detaches even when the body throws', async () => {
      const img = path.join(dir, 'b.img');
      await mkfs(img, 32 << 20, ['--mixed']);
      let seen = '';
      let err: unknown;
      try {
        await withMount(img, { options: ['compress=zstd'] }, async (mnt) => {
          seen = mnt;
          await fs.writeFile(path.join(mnt, 'x'), 'y');
          throw new Error('boom from body');
        });
      } catch (e) {
        err = e;
      }
      expect((err as Error)?.message).to.equal('boom from body');
      expect(seen).to.not.equal('');
      expect(mountedAt(seen)).to.equal(false);
      expect(await loopsFor(img)).to.equal('');
      // Even with an open file inside the mount the helper retries/unmounts.
      await withMount(img, {}, async (mnt) => {
        seen = mnt;
        const fh = await fs.open(path.join(mnt, 'x'), 'r');
        setTimeout(() => void fh.close(), 500);
      });
      expect(mountedAt(seen)).to.equal(false);
      expect(await loopsFor(img)).to.equal('');
    });

    it('a mount failure leaves no loop device behind', async () => {
      const img = path.join(dir, 'notbtrfs.img');
      await fs.writeFile(img, Buffer.alloc(1 << 20));
      let err: unknown;
      try {
        await withMount(img, {}, async () => 1);
      } catch (e) {
        err = e;
      }
      expect((err as Error)?.message).to.match(/command failed.*mount/s);
      expect(await loopsFor(img)).to.equal('');
    });
  });

  describe('native fixtures', () => {
    let names: string[] = [];
    before(async () => {
      names = await listFixtures();
    });

    it('lists the fixtures', () => {
      expect(names.length).to.be.greaterThan(10);
      expect(names).to.include.members(['empty', 'half-deleted-subvol', 'mixed', 'compression']);
    });

    it('every fixture manifest parses and has the documented schema', async () => {
      for (const n of names) {
        const f: FixtureManifest = await fixtureManifest(n);
        expect(f.name).to.equal(n);
        expect(f).to.include.keys(['description', 'mkfs_args', 'mount_opts', 'image_size', 'image_sha256', 'kernel', 'progs', 'fs', 'subvolumes', 'default_subvolume', 'deleted_subvolumes', 'check', 'tree']);
        expect(f.check, n).to.deep.equal({ ok: true, code: 0 });
        expect(checkOutputClean(await fixtureCheckOutput(n)).ok, n).to.equal(true);
        expect(f.tree['/'].type).to.equal('dir');
        for (const [p, e] of Object.entries(f.tree)) {
          expect(p === '/' || (p.startsWith('/') && !p.endsWith('/')), p).to.equal(true);
          expect(e.mtime_ns).to.match(/^-?\d+$/);
          if (e.type === 'file') expect(e.sha256, p).to.match(/^[0-9a-f]{64}$/);
        }
      }
      const h = await fixtureManifest('half-deleted-subvol');
      expect(h.deleted_subvolumes).to.deep.equal([h.notes!.half_deleted_subvolume_id]);
      const l = await fixtureManifest('nodesize-4k-large-dir');
      expect((l.notes!.tree_levels as Record<string, number>).FS_TREE).to.be.at.least(2);
    });

    it('decompresses sparse, once per run, to the recorded image', async () => {
      const p = await fixturePath('empty');
      expect(await fixturePath('empty')).to.equal(p);
      const st = await fs.stat(p);
      const f = await fixtureManifest('empty');
      expect(st.size).to.equal(f.image_size);
      expect(st.blocks * 512).to.be.lessThan(st.size / 10);
      const du = await runOk('du', ['-k', p]);
      expect(Number(du.stdout.split('\t')[0]) * 1024).to.be.lessThan(st.size / 10);
      expect(await hashFile(p)).to.equal(f.image_sha256);
      const pm = await fixturePath('mixed');
      expect(await hashFile(pm)).to.equal((await fixtureManifest('mixed')).image_sha256);
    });

    describe('kernel mount of each fixture matches its manifest', function () {
      before(async function () {
        await requireNativeOrSkip(this);
      });
      // Registered lazily: names are known only after listFixtures() in the outer before().
      it('every fixture', async function () {
        for (const n of names) {
          const f = await fixtureManifest(n);
          const img = await fixturePath(n);
          expect(await hashFile(img), `${n} image hash`).to.equal(f.image_sha256);
          const { tree, subvols } = await withMount(img, { readonly: true, options: 'subvolid=5' }, async (mnt) => ({
            tree: await manifestOf(mnt),
            subvols: await subvolumeList(mnt),
          }));
          expect(diffManifests(f.tree, tree, { strictDirs: true, compareIno: true, compareDevBoundary: true }), n).to.deep.equal([]);
          expect(subvols, n).to.deep.equal(f.subvolumes);
        }
      });
    });
  });
});
