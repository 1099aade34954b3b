/**
 * Each kind of damage is caught, in btrfs check's words: a fixture is seen
 * through an OverlayDevice, one item is rewritten (and its block's checksum
 * recomputed, so only the cross-tree check can notice), and the check must
 * report an error saying what is wrong.
 */
import { expect } from 'chai';
import { FileDevice } from '../../src/device/file-device.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import type { TreeItem } from '../../src/tree/search.js';
import { FEATURE_INCOMPAT, HEADER_SIZE, INODE_FLAG, KEY, KEY_PTR_SIZE, OBJ, S_IFLNK, S_IFMT, S_IFREG, SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS } from '../../src/format/constants.js';
import { checksum } from '../../src/util/checksum.js';
import { checkImage, formatFinding, type CheckReport } from '../../src/check/index.js';
import { fixturePath } from '../helpers/fixtures.js';
import { OverlayDevice } from '../helpers/overlay-device.js';
import { withDamagedItem } from '../helpers/damage.js';
import { rejects } from '../helpers/expect-error.js';

const FIXTURE = 'filetypes-links-modes-times';

/** Finds the first item of tree `tree` that `pick` accepts and lets `edit` change its bytes in place. */
async function damage(tree: bigint, pick: (it: TreeItem) => boolean, edit: (data: Buffer) => void): Promise<CheckReport> {
  return damageBlock(tree, pick, (_block, data) => edit(data));
}

/** Like damage, with the whole block (header included) to edit as well as the item's bytes. */
function damageBlock(tree: bigint, pick: (it: TreeItem) => boolean, edit: (block: Buffer, data: Buffer) => void): Promise<CheckReport> {
  return withDamagedItem(FIXTURE, tree, pick, edit, (dev) => checkImage(dev));
}

/** Checks the fixture with its primary superblock edited (checksum recomputed). */
async function damageSuper(edit: (sb: Buffer) => void): Promise<CheckReport> {
  const base = await FileDevice.open(await fixturePath(FIXTURE), { readOnly: true });
  try {
    const info = await FsInfo.open(base);
    const sb = Buffer.from(await base.read(SUPER_MIRROR_OFFSETS[0]!, SUPER_INFO_SIZE));
    edit(sb);
    checksum(info.csumType, sb.subarray(32, SUPER_INFO_SIZE)).copy(sb, 0);
    const dev = new OverlayDevice(base);
    dev.patch(SUPER_MIRROR_OFFSETS[0]!, sb);
    return await checkImage(dev);
  } finally {
    await base.close();
  }
}

function expectError(r: CheckReport, code: string, wording: RegExp): void {
  const lines = r.findings.map(formatFinding);
  expect(r.clean, lines.join('\n')).to.equal(false);
  const f = r.findings.find((x) => x.code === code && x.severity === 'error');
  expect(f, `a ${code} error among:\n${lines.join('\n')}`).to.not.equal(undefined);
  expect(f!.message).to.match(wording);
}

describe('check: deliberate damage is caught', function () {
  this.timeout(120_000);

  it('the pristine fixture is clean', async () => {
    const r = await checkImage(await fixturePath(FIXTURE));
    expect(r.findings.map(formatFinding)).to.deep.equal([]);
  });

  it('a wrong nlink', async () => {
    const r = await damage(OBJ.FS_TREE, (it) => it.key.type === KEY.INODE_ITEM && (it.data.readUInt32LE(52) & S_IFMT) === S_IFREG,
      (d) => d.writeUInt32LE(d.readUInt32LE(40) + 1, 40));
    expectError(r, 'nlink', /^root 5 inode \d+ errors: link count wrong, nlink \d+ but found \d+ name/);
  });

  it('a damaged DIR_INDEX (its name no longer matches the inode ref)', async () => {
    const r = await damage(OBJ.FS_TREE, (it) => it.key.type === KEY.DIR_INDEX, (d) => { d[30] = d[30]! ^ 0x01; });
    expectError(r, 'no-dir-index', /unresolved ref dir 256 index \d+ namelen \d+ name .*, no dir index/);
    expectError(r, 'no-inode-ref', /no inode ref/);
  });

  it('a wrong extent refcount', async () => {
    const r = await damage(OBJ.EXTENT_TREE, (it) => it.key.type === KEY.EXTENT_ITEM, (d) => d.writeBigUInt64LE(d.readBigUInt64LE(0) + 1n, 0));
    expectError(r, 'extent-refs-sum', /extent item \[\d+ \d+\] has refs 2 but its backrefs add up to 1/);
    expectError(r, 'ref-mismatch', /^ref mismatch on \[\d+ \d+\] extent item 2, found 1/);
  });

  it('a wrong block group used', async () => {
    const r = await damage(OBJ.EXTENT_TREE, (it) => it.key.type === KEY.BLOCK_GROUP_ITEM, (d) => d.writeBigUInt64LE(d.readBigUInt64LE(0) + 4096n, 0));
    expectError(r, 'block-group-used', /^block group \[\d+ \d+\] used \d+ but extent items used \d+$/);
  });

  // The kernel only lets files and directories be made immutable/append-only.
  const setInodeFlag = (type: number, flag: bigint) => damage(OBJ.FS_TREE,
    (it) => it.key.type === KEY.INODE_ITEM && (it.data.readUInt32LE(52) & S_IFMT) === type,
    (d) => d.writeBigUInt64LE(d.readBigUInt64LE(64) | flag, 64));

  it('an immutable symlink', async () => {
    const r = await setInodeFlag(S_IFLNK, INODE_FLAG.IMMUTABLE);
    expectError(r, 'odd-inode-flags', /^root 5 inode \d+ errors: odd inode flags 0x40 /);
  });

  it('an immutable regular file is fine', async () => {
    const r = await setInodeFlag(S_IFREG, INODE_FLAG.IMMUTABLE);
    expect(r.findings.map(formatFinding)).to.deep.equal([]);
  });

  it('a leaf whose header names a tree that does not reference it', async () => {
    const r = await damageBlock(OBJ.FS_TREE, (it) => it.key.type === KEY.INODE_ITEM, (block) => block.writeBigUInt64LE(OBJ.EXTENT_TREE, 88));
    expectError(r, 'owner-ref', /^owner ref check failed \[\d+ \d+\]/);
  });

  it('an empty leaf below a node (the kernel refuses it: invalid tree nritems)', async () => {
    // the fixture's fs tree has a node above its leaves, so every leaf has a first key to meet
    const r = await damageBlock(OBJ.FS_TREE, (it) => it.key.type === KEY.INODE_ITEM, (block) => block.writeUInt32LE(0, 96));
    expectError(r, 'bad-tree-block', /invalid tree nritems, bytenr=\d+ nritems=0 expect >0/);
  });

  it('a pointer of one snapshot that disagrees with a leaf it shares with another tree (first key), when the leaf was read through the other first', async () => {
    // half-deleted-subvol: subvolume 258 is a snapshot of 256, and their root nodes point to many of the same leaves
    const base = await FileDevice.open(await fixturePath('half-deleted-subvol'), { readOnly: true });
    try {
      const info = await FsInfo.open(base);
      const src = await info.reader.read({ bytenr: (await info.findRoot(256n))!.item.bytenr });
      const snapRoot = (await info.findRoot(258n))!.item.bytenr;
      const snap = await info.reader.read({ bytenr: snapRoot });
      const shared = new Set(src.ptrs.map((p) => p.blockptr));
      const slot = snap.ptrs.findIndex((p, i) => i > 0 && shared.has(p.blockptr));
      expect(slot, 'a shared child').to.be.above(0);
      const child = snap.ptrs[slot]!;
      // one more in the key's offset: still in order, no longer the child's first key
      const buf = Buffer.from(snap.buf);
      const at = HEADER_SIZE + slot * KEY_PTR_SIZE + 9;
      buf.writeBigUInt64LE(buf.readBigUInt64LE(at) + 1n, at);
      checksum(info.csumType, buf.subarray(32)).copy(buf, 0);
      const dev = new OverlayDevice(base);
      for (const c of info.chunks.map(snapRoot, info.nodesize)) dev.patch(Number(c.physical), buf);

      const damaged = await FsInfo.open(dev);
      const node = await damaged.reader.read({ bytenr: snapRoot });
      const want = node.ptrs[slot]!;
      await damaged.reader.read({ bytenr: child.blockptr, level: 0, generation: child.generation, firstKey: child.key, owner: 256n });
      await rejects(damaged.reader.read({ bytenr: want.blockptr, level: 0, generation: want.generation, firstKey: want.key, owner: 258n }), 'EUCLEAN', 'first key mismatch');

      const r = await checkImage(dev);
      expectError(r, 'bad-tree-block', /first key mismatch, want \(\d+ DIR_ITEM \d+\) have \(\d+ DIR_ITEM \d+\)/);
    } finally {
      await base.close();
    }
  });

  it("a root directory whose '..' reference has another index", async () => {
    const r = await damage(OBJ.FS_TREE, (it) => it.key.type === KEY.INODE_REF && it.key.objectid === 256n, (d) => d.writeBigUInt64LE(1n, 0));
    expectError(r, 'root-dir-ref', /^root 5 inode 256 errors: odd dir item/);
  });

  it('a chunk with a stripe length the kernel refuses', async () => {
    const r = await damage(OBJ.CHUNK_TREE, (it) => it.key.type === KEY.CHUNK_ITEM, (d) => d.writeBigUInt64LE(4096n, 16));
    expectError(r, 'chunk-invalid', /invalid chunk stripe length: 4096/);
  });

  it('a device item of another filesystem', async () => {
    const r = await damage(OBJ.CHUNK_TREE, (it) => it.key.type === KEY.DEV_ITEM, (d) => { d[82] = d[82]! ^ 1; });
    expectError(r, 'dev-item-fsid', /^dev item 1 belongs to filesystem [0-9a-f]{32}, not this one/);
  });

  it('a file extent turned preallocated while its data has checksums', async () => {
    const r = await damage(OBJ.FS_TREE, (it) => it.key.type === KEY.EXTENT_DATA && it.data[20] === 1 && it.data.readBigUInt64LE(21) !== 0n,
      (d) => { d[20] = 2; });
    expectError(r, 'odd-csum-item', /odd csum item/);
  });

  // btrfs check 6.2 refuses to open such a filesystem at all (it does not know the feature).
  it('the simple quota feature on a filesystem without quotas', async () => {
    const r = await damageSuper((sb) => sb.writeBigUInt64LE(sb.readBigUInt64LE(188) | FEATURE_INCOMPAT.SIMPLE_QUOTA, 188));
    expectError(r, 'simple-quota', /^incompat feature SIMPLE_QUOTA is set but quotas are not enabled/);
  });

  it('a wrong directory isize', async () => {
    const r = await damage(OBJ.FS_TREE, (it) => it.key.type === KEY.INODE_ITEM && it.key.objectid === 256n,
      (d) => d.writeBigUInt64LE(d.readBigUInt64LE(16) + 2n, 16));
    expectError(r, 'dir-isize', /^root 5 inode 256 errors: dir isize wrong, have \d+ expect \d+/);
  });
});
