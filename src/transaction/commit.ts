/**
 * Commit (the kernel's btrfs_commit_transaction): bring the extent tree, the
 * block group items, the free space tree, new chunks and every root item in
 * line with what the transaction did, then write every new block, flush,
 * write the superblock last, flush again.
 *
 * Bringing the bookkeeping in line changes trees, which allocates and frees
 * blocks, which is more bookkeeping; commit goes round until a round changes
 * nothing. It ends because a block already written in this transaction is
 * edited in place: after a round or two only splits could allocate more.
 */
import { BtrfsError } from '../util/errors.js';
import { KEY, OBJ, BLOCK_GROUP, DISK_KEY_SIZE, SYSTEM_CHUNK_ARRAY_SIZE, SUPER_MIRROR_OFFSETS, SUPER_INFO_SIZE, FEATURE_COMPAT_RO } from '../format/constants.js';
import { key, encodeKey, type Key } from '../format/key.js';
import { encodeChunkItem } from '../format/items/chunk-item.js';
import { devItem as devItemCodec } from '../format/items/dev-item.js';
import { encodeDevExtent } from '../format/items/dev-extent.js';
import { decodeBlockGroupItem, encodeBlockGroupItem } from '../format/items/block-group-item.js';
import { encodeSuperblock, sealSuperblock, type Superblock, type RootBackup } from '../format/superblock.js';
import type { BlockGroup, SpaceManager } from '../extent/block-groups.js';
import { applyDataRefs, applyMetaRef, type ExtentTreeContext } from '../extent/extent-tree.js';
import { writeFreeSpace } from '../extent/free-space-tree.js';
import type { Transaction } from './transaction.js';

const MAX_ROUNDS = 64;

/** What the commit needs besides the transaction. */
export interface CommitTarget {
  space: SpaceManager;
  /** bytes of every block group item as last written, by group start */
  writtenUsed: Map<bigint, bigint>;
  /** chunks whose items are in the trees already */
  chunksWritten: Set<bigint>;
}

function bgTree(sb: Superblock): bigint {
  return sb.compat_ro_flags & FEATURE_COMPAT_RO.BLOCK_GROUP_TREE ? OBJ.BLOCK_GROUP_TREE : OBJ.EXTENT_TREE;
}

/** Runs rounds until the trees describe the transaction; returns the number of rounds. */
export async function settle(txn: Transaction, t: CommitTarget): Promise<number> {
  const info = txn.host.info;
  const ctx: ExtentTreeContext = {
    items: txn, space: t.space, generation: txn.generation, nodesize: info.nodesize,
    deleteCsums: (s, e) => txn.deleteCsums(s, e),
  };
  for (let round = 1; round <= MAX_ROUNDS; round++) {
    let changed = false;
    changed = (await writeNewChunks(txn, t)) || changed;
    if (!txn.refs.empty) {
      changed = true;
      const { meta, data } = txn.refs.take();
      const newItems: { key: Key; data: Buffer }[] = [];
      const batched: ExtentTreeContext = { ...ctx, newItems };
      for (const [bytenr, d] of data) await applyDataRefs(batched, bytenr, d);
      for (const [bytenr, m] of meta) await applyMetaRef(batched, bytenr, m);
      // one sorted batch: new extents are mostly appends, a descent per leaf
      if (newItems.length) await txn.insertItems(OBJ.EXTENT_TREE, newItems);
    }
    for (const g of t.space.all()) {
      if (t.writtenUsed.get(g.start) !== g.used) {
        changed = true;
        await writeBlockGroupItem(txn, g, info.sb);
        t.writtenUsed.set(g.start, g.used);
      }
      if (g.free && g.stored) {
        const want = t.space.wantedFree(g);
        if (!want.equals(g.stored) || g.storedFlags !== 0 || g.isNew) {
          changed = true;
          await writeFreeSpace(txn, g.start, g.length, g.stored, g.storedFlags, want);
          g.stored = want;
          g.storedFlags = 0;
          g.isNew = false;
        }
      }
    }
    if (txn.rootsMoved || txn.changedSubvols.size > 0) {
      changed = true;
      await txn.syncRootItems();
    }
    if (!changed) return round;
  }
  throw new BtrfsError('EIO', `commit did not settle after ${MAX_ROUNDS} rounds`);
}

async function writeBlockGroupItem(txn: Transaction, g: BlockGroup, sb: Superblock): Promise<void> {
  const tree = bgTree(sb);
  const k = key(g.start, KEY.BLOCK_GROUP_ITEM, g.length);
  const old = await txn.lookup(tree, k);
  if (old) {
    const item = decodeBlockGroupItem(old);
    await txn.update(tree, k, encodeBlockGroupItem({ ...item, used: g.used }));
  } else {
    await txn.insert(tree, k, encodeBlockGroupItem({ used: g.used, chunk_objectid: OBJ.FIRST_CHUNK_TREE, flags: g.flags }));
  }
}

/** Chunk items, device extents and the device item for chunks made in this transaction. */
async function writeNewChunks(txn: Transaction, t: CommitTarget): Promise<boolean> {
  const info = txn.host.info;
  let any = false;
  for (const { logical, chunk } of t.space.newChunks) {
    if (t.chunksWritten.has(logical)) continue;
    t.chunksWritten.add(logical);
    any = true;
    await txn.insert(OBJ.CHUNK_TREE, key(OBJ.FIRST_CHUNK_TREE, KEY.CHUNK_ITEM, logical), encodeChunkItem(chunk));
    for (const s of chunk.stripes) {
      await txn.insert(OBJ.DEV_TREE, key(s.devid, KEY.DEV_EXTENT, s.offset), encodeDevExtent({
        chunk_tree: OBJ.CHUNK_TREE, chunk_objectid: OBJ.FIRST_CHUNK_TREE, chunk_offset: logical, length: chunk.length, chunk_tree_uuid: txn.chunkTreeUuid,
      }));
    }
    if (chunk.type & BLOCK_GROUP.SYSTEM) appendSysChunk(info.sb, logical, encodeChunkItem(chunk));
  }
  if (any) {
    const devid = info.sb.dev_item.devid;
    const dk = key(OBJ.DEV_ITEMS, KEY.DEV_ITEM, devid);
    const raw = await txn.lookup(OBJ.CHUNK_TREE, dk);
    if (!raw) throw new BtrfsError('EUCLEAN', `no device item for devid ${devid}`, { tree: OBJ.CHUNK_TREE, key: dk });
    const dev = devItemCodec.decode(raw, 0);
    dev.bytes_used = t.space.deviceBytesUsed;
    await txn.update(OBJ.CHUNK_TREE, dk, devItemCodec.toBuffer(dev));
    info.sb.dev_item.bytes_used = dev.bytes_used;
  }
  return any;
}

function appendSysChunk(sb: Superblock, logical: bigint, chunk: Buffer): void {
  const at = sb.sys_chunk_array_size;
  if (at + DISK_KEY_SIZE + chunk.length > SYSTEM_CHUNK_ARRAY_SIZE) throw new BtrfsError('ENOSPC', 'no room left in the superblock for another system chunk');
  const arr = Buffer.from(sb.sys_chunk_array);
  encodeKey(key(OBJ.FIRST_CHUNK_TREE, KEY.CHUNK_ITEM, logical), arr, at);
  chunk.copy(arr, at + DISK_KEY_SIZE);
  sb.sys_chunk_array = arr;
  sb.sys_chunk_array_size = at + DISK_KEY_SIZE + chunk.length;
}

/** Writes every pending block to each of its copies. */
export async function writeBlocks(txn: Transaction): Promise<number> {
  const info = txn.host.info;
  const devid = info.sb.dev_item.devid;
  const jobs: Promise<void>[] = [];
  let n = 0;
  for (const [bytenr, buf] of txn.pending) {
    for (const c of info.chunks.map(bytenr, buf.length)) {
      if (c.devid !== devid) throw new BtrfsError('ENOTSUP', `block ${bytenr} lives on device ${c.devid}`);
      jobs.push(info.device.write(Number(c.physical), buf));
      n++;
    }
    if (jobs.length >= 64) await Promise.all(jobs.splice(0));
  }
  await Promise.all(jobs);
  return n;
}

/** The superblock the commit ends with: new roots, sizes and a rotated backup slot. */
export async function buildSuperblock(txn: Transaction, space: SpaceManager): Promise<Superblock> {
  const info = txn.host.info;
  const old = info.sb;
  const sb: Superblock = { ...old, dev_item: { ...old.dev_item }, super_roots: old.super_roots.map((r) => ({ ...r })) };
  sb.generation = txn.generation;
  sb.root = txn.rootTree.bytenr;
  sb.root_level = txn.rootTree.level;
  sb.chunk_root = txn.chunkRoot.bytenr;
  sb.chunk_root_level = txn.chunkRoot.level;
  if (txn.chunkTreeChanged) sb.chunk_root_generation = txn.chunkRoot.generation;
  sb.bytes_used = space.bytesUsed;
  sb.dev_item.bytes_used = space.deviceBytesUsed;
  const uuid = await txn.rootOf(OBJ.UUID_TREE).catch(() => undefined);
  if (uuid) sb.uuid_tree_generation = uuid.generation;
  if (sb.compat_ro_flags & FEATURE_COMPAT_RO.BLOCK_GROUP_TREE) {
    const bg = await txn.rootOf(OBJ.BLOCK_GROUP_TREE);
    sb.block_group_root = bg.bytenr;
    sb.block_group_root_level = bg.level;
    sb.block_group_root_generation = bg.generation;
  }
  // the kernel fills the slot after the newest one, round robin
  let newest = 0;
  for (let i = 1; i < sb.super_roots.length; i++) if (sb.super_roots[i]!.tree_root_gen > sb.super_roots[newest]!.tree_root_gen) newest = i;
  const slot = sb.super_roots[newest]!.tree_root_gen === 0n ? 0 : (newest + 1) % sb.super_roots.length;
  const r = async (id: bigint) => txn.rootOf(id);
  const [extent, fs, dev, csum] = await Promise.all([r(OBJ.EXTENT_TREE), r(OBJ.FS_TREE), r(OBJ.DEV_TREE), r(OBJ.CSUM_TREE)]);
  const b: RootBackup = {
    ...sb.super_roots[slot]!,
    tree_root: sb.root, tree_root_gen: sb.generation, tree_root_level: sb.root_level,
    chunk_root: sb.chunk_root, chunk_root_gen: sb.chunk_root_generation, chunk_root_level: sb.chunk_root_level,
    extent_root: extent.bytenr, extent_root_gen: extent.generation, extent_root_level: extent.level,
    fs_root: fs.bytenr, fs_root_gen: fs.generation, fs_root_level: fs.level,
    dev_root: dev.bytenr, dev_root_gen: dev.generation, dev_root_level: dev.level,
    csum_root: csum.bytenr, csum_root_gen: csum.generation, csum_root_level: csum.level,
    total_bytes: sb.total_bytes, bytes_used: sb.bytes_used, num_devices: sb.num_devices,
  };
  sb.super_roots[slot] = b;
  return sb;
}

/** Writes the superblock to the primary location and every mirror the device holds. */
export async function writeSuperblocks(txn: Transaction, sb: Superblock): Promise<void> {
  const dev = txn.host.info.device;
  for (const off of SUPER_MIRROR_OFFSETS) {
    if (off + SUPER_INFO_SIZE > dev.size) break;
    const buf = encodeSuperblock({ ...sb, bytenr: BigInt(off) });
    sealSuperblock(buf, sb.csum_type);
    await dev.write(off, buf);
  }
}
