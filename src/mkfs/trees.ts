/**
 * The contents of a new, empty filesystem: one leaf per tree and the
 * superblock that points at them, all at one generation.
 *
 *   root tree        ROOT_ITEMs of every other tree except the chunk tree;
 *                    directory 6 holding 'default' -> the FS tree
 *   chunk tree       DEV_ITEM of device 1, a CHUNK_ITEM per chunk
 *   extent tree      a BLOCK_GROUP_ITEM per chunk, a skinny METADATA_ITEM per tree block
 *   dev tree         a DEV_EXTENT per chunk stripe
 *   fs tree (5)      the root directory, inode 256
 *   csum tree        empty
 *   uuid tree        the FS tree's uuid -> 5
 *   free space tree  per block group: FREE_SPACE_INFO + one FREE_SPACE_EXTENT per free range
 *   data reloc tree  its root directory, inode 256
 *
 * Pure: nothing here touches a device.
 */
import { BLOCK_GROUP, EXTENT_FLAG, FEATURE_COMPAT_RO, FEATURE_INCOMPAT, FT, KEY, LABEL_SIZE, MAGIC, OBJ, ROOT_DIR_INO, S_IFDIR } from '../format/constants.js';
import { compareKeys, encodeKey, key, KEY_MIN } from '../format/key.js';
import type { Timespec } from '../format/layout.js';
import type { RootBackup, Superblock } from '../format/superblock.js';
import { encodeLeaf, type ItemInput } from '../format/tree-block-encode.js';
import { encodeBlockGroupItem } from '../format/items/block-group-item.js';
import { encodeChunkItem, type ChunkItem } from '../format/items/chunk-item.js';
import { encodeDevExtent } from '../format/items/dev-extent.js';
import { devItem, type DevItem } from '../format/items/dev-item.js';
import { encodeDirItems } from '../format/items/dir-item.js';
import { encodeExtentItem } from '../format/items/extent-item.js';
import { encodeFreeSpaceInfo } from '../format/items/free-space.js';
import { encodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { encodeInodeRefs } from '../format/items/inode-ref.js';
import { encodeRootItem, type RootItem } from '../format/items/root-item.js';
import { encodeUuidItem, uuidKeyParts } from '../format/items/uuid-item.js';
import { nameHash } from '../util/checksum.js';
import { STRIPE_LEN, type ChunkPlan, type Layout } from './layout.js';

/** What mkfs.btrfs 6.2 turns on by default (mixed block groups excepted, which are never used). */
export const MKFS_INCOMPAT = FEATURE_INCOMPAT.MIXED_BACKREF | FEATURE_INCOMPAT.EXTENDED_IREF |
  FEATURE_INCOMPAT.SKINNY_METADATA | FEATURE_INCOMPAT.NO_HOLES;
export const MKFS_COMPAT_RO = FEATURE_COMPAT_RO.FREE_SPACE_TREE | FEATURE_COMPAT_RO.FREE_SPACE_TREE_VALID;

/** The superblock flag the kernel sets on every superblock it writes (it reuses the header's WRITTEN bit). */
const SUPER_FLAG_WRITTEN = 1n;
const DEVID = 1n;

/** Logical bytenr of each tree's one leaf. The chunk tree's is in the SYSTEM chunk, the others in METADATA. */
export interface TreeBlocks {
  root: bigint;
  chunk: bigint;
  extent: bigint;
  dev: bigint;
  fs: bigint;
  csum: bigint;
  uuid: bigint;
  freeSpace: bigint;
  dataReloc: bigint;
}

/** The tree id each leaf of TreeBlocks belongs to. */
export const TREE_OWNERS: Record<keyof TreeBlocks, bigint> = {
  root: OBJ.ROOT_TREE, chunk: OBJ.CHUNK_TREE, extent: OBJ.EXTENT_TREE, dev: OBJ.DEV_TREE, fs: OBJ.FS_TREE,
  csum: OBJ.CSUM_TREE, uuid: OBJ.UUID_TREE, freeSpace: OBJ.FREE_SPACE_TREE, dataReloc: OBJ.DATA_RELOC_TREE,
};

export interface FsIdentity {
  fsid: Buffer;
  devUuid: Buffer;
  chunkTreeUuid: Buffer;
  /** the top-level subvolume's uuid (its ROOT_ITEM and the uuid tree) */
  fsTreeUuid: Buffer;
}

export interface InitialFs {
  layout: Layout;
  blocks: TreeBlocks;
  ids: FsIdentity;
  nodesize: number;
  sectorsize: number;
  csumType: number;
  generation: bigint;
  /** creation time of the directories and the FS tree */
  now: Timespec;
  /** UTF-8, at most 255 bytes (checked by the caller) */
  label: string;
}

/** One leaf ready to encode: items in key order. */
export interface LeafContents { name: keyof TreeBlocks; owner: bigint; bytenr: bigint; items: ItemInput[] }

const ZERO_TIME: Timespec = { sec: 0n, nsec: 0 };
const NO_UUID = Buffer.alloc(16);

function directoryInode(f: InitialFs): InodeItem {
  // A directory's size counts its entries' names; these have none. nbytes is 0
  // for directories as the kernel writes them (mkfs.btrfs's nodesize there is
  // a leftover nothing reads).
  return {
    generation: f.generation, transid: f.generation, size: 0n, nbytes: 0n, block_group: 0n,
    nlink: 1, uid: 0, gid: 0, mode: S_IFDIR | 0o755, rdev: 0n, flags: 0n, sequence: 0n, reserved: Buffer.alloc(32),
    atime: f.now, ctime: f.now, mtime: f.now, otime: f.now,
  };
}

/** The inode embedded in a ROOT_ITEM: unused, but filled as the kernel and mkfs.btrfs fill it. */
function rootItemInode(f: InitialFs): InodeItem {
  return {
    generation: 1n, transid: 0n, size: 3n, nbytes: BigInt(f.nodesize), block_group: 0n,
    nlink: 1, uid: 0, gid: 0, mode: S_IFDIR | 0o755, rdev: 0n, flags: 0n, sequence: 0n, reserved: Buffer.alloc(32),
    atime: ZERO_TIME, ctime: ZERO_TIME, mtime: ZERO_TIME, otime: ZERO_TIME,
  };
}

function rootItem(f: InitialFs, bytenr: bigint, extra: Partial<RootItem> = {}): RootItem {
  return {
    inode: rootItemInode(f), generation: f.generation, root_dirid: 0n, bytenr, byte_limit: 0n,
    bytes_used: BigInt(f.nodesize), last_snapshot: 0n, flags: 0n, refs: 1, drop_progress: KEY_MIN, drop_level: 0,
    level: 0, generation_v2: f.generation, uuid: NO_UUID, parent_uuid: NO_UUID, received_uuid: NO_UUID,
    ctransid: 0n, otransid: 0n, stransid: 0n, rtransid: 0n,
    ctime: ZERO_TIME, otime: ZERO_TIME, stime: ZERO_TIME, rtime: ZERO_TIME, reserved: Buffer.alloc(64),
    itemSize: 439, ...extra,
  };
}

/** inode 256 with its '..' back reference: the root directory of a subvolume. */
function rootDirectory(f: InitialFs): ItemInput[] {
  return [
    { key: key(ROOT_DIR_INO, KEY.INODE_ITEM, 0), data: encodeInodeItem(directoryInode(f)) },
    { key: key(ROOT_DIR_INO, KEY.INODE_REF, ROOT_DIR_INO), data: encodeInodeRefs([{ index: 0n, name: Buffer.from('..') }]) },
  ];
}

function rootTree(f: InitialFs): ItemInput[] {
  const b = f.blocks;
  const dflt = Buffer.from('default');
  return [
    { key: key(OBJ.EXTENT_TREE, KEY.ROOT_ITEM, 0), data: encodeRootItem(rootItem(f, b.extent)) },
    { key: key(OBJ.DEV_TREE, KEY.ROOT_ITEM, 0), data: encodeRootItem(rootItem(f, b.dev)) },
    // the FS tree's name in directory 6, as mkfs.btrfs records it
    { key: key(OBJ.FS_TREE, KEY.INODE_REF, OBJ.ROOT_TREE_DIR), data: encodeInodeRefs([{ index: 0n, name: dflt }]) },
    {
      key: key(OBJ.FS_TREE, KEY.ROOT_ITEM, 0),
      data: encodeRootItem(rootItem(f, b.fs, {
        root_dirid: ROOT_DIR_INO, uuid: f.ids.fsTreeUuid, ctransid: f.generation, otransid: f.generation,
        ctime: f.now, otime: f.now,
      })),
    },
    { key: key(OBJ.ROOT_TREE_DIR, KEY.INODE_ITEM, 0), data: encodeInodeItem(directoryInode(f)) },
    { key: key(OBJ.ROOT_TREE_DIR, KEY.INODE_REF, OBJ.ROOT_TREE_DIR), data: encodeInodeRefs([{ index: 0n, name: Buffer.from('..') }]) },
    {
      key: key(OBJ.ROOT_TREE_DIR, KEY.DIR_ITEM, nameHash(dflt)),
      // offset -1: "the newest root item of tree 5", as the default subvolume entry is always written
      data: encodeDirItems([{ location: key(OBJ.FS_TREE, KEY.ROOT_ITEM, 0xffff_ffff_ffff_ffffn), transid: f.generation, type: FT.DIR, name: dflt, data: Buffer.alloc(0) }]),
    },
    { key: key(OBJ.CSUM_TREE, KEY.ROOT_ITEM, 0), data: encodeRootItem(rootItem(f, b.csum)) },
    { key: key(OBJ.UUID_TREE, KEY.ROOT_ITEM, 0), data: encodeRootItem(rootItem(f, b.uuid)) },
    { key: key(OBJ.FREE_SPACE_TREE, KEY.ROOT_ITEM, 0), data: encodeRootItem(rootItem(f, b.freeSpace)) },
    { key: key(OBJ.DATA_RELOC_TREE, KEY.ROOT_ITEM, 0), data: encodeRootItem(rootItem(f, b.dataReloc, { root_dirid: ROOT_DIR_INO })) },
  ];
}

export function deviceItem(f: InitialFs): DevItem {
  return {
    devid: DEVID, total_bytes: f.layout.totalBytes, bytes_used: f.layout.devBytesUsed,
    io_align: f.sectorsize, io_width: f.sectorsize, sector_size: f.sectorsize, type: 0n, generation: 0n,
    start_offset: 0n, dev_group: 0, seek_speed: 0, bandwidth: 0, uuid: f.ids.devUuid, fsid: f.ids.fsid,
  };
}

export function chunkItem(f: InitialFs, c: ChunkPlan): ChunkItem {
  return {
    length: c.length, owner: OBJ.EXTENT_TREE, stripe_len: STRIPE_LEN, type: c.type,
    io_align: Number(STRIPE_LEN), io_width: Number(STRIPE_LEN), sector_size: f.sectorsize,
    num_stripes: c.stripes.length, sub_stripes: 1,
    stripes: c.stripes.map((offset) => ({ devid: DEVID, offset, dev_uuid: f.ids.devUuid })),
  };
}

function chunkTree(f: InitialFs): ItemInput[] {
  return [
    { key: key(OBJ.DEV_ITEMS, KEY.DEV_ITEM, DEVID), data: devItem.toBuffer(deviceItem(f)) },
    ...f.layout.chunks.map((c) => ({ key: key(OBJ.FIRST_CHUNK_TREE, KEY.CHUNK_ITEM, c.logical), data: encodeChunkItem(chunkItem(f, c)) })),
  ];
}

function devTree(f: InitialFs): ItemInput[] {
  return f.layout.chunks.flatMap((c) => c.stripes.map((physical) => ({
    key: key(DEVID, KEY.DEV_EXTENT, physical),
    data: encodeDevExtent({
      chunk_tree: OBJ.CHUNK_TREE, chunk_objectid: OBJ.FIRST_CHUNK_TREE, chunk_offset: c.logical, length: c.length,
      chunk_tree_uuid: f.ids.chunkTreeUuid,
    }),
  })));
}

function allBlocks(f: InitialFs): { name: keyof TreeBlocks; bytenr: bigint; owner: bigint }[] {
  return (Object.keys(TREE_OWNERS) as (keyof TreeBlocks)[]).map((name) => ({ name, bytenr: f.blocks[name], owner: TREE_OWNERS[name] }));
}

/** Tree block starts inside chunk c, ascending. */
function blocksIn(f: InitialFs, c: ChunkPlan): bigint[] {
  return allBlocks(f).map((b) => b.bytenr).filter((b) => b >= c.logical && b < c.logical + c.length).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Bytes of a block group taken by tree blocks: its BLOCK_GROUP_ITEM's used. */
export function blockGroupUsed(f: InitialFs, c: ChunkPlan): bigint {
  return BigInt(blocksIn(f, c).length) * BigInt(f.nodesize);
}

function extentTree(f: InitialFs): ItemInput[] {
  const items: ItemInput[] = f.layout.chunks.map((c) => ({
    key: key(c.logical, KEY.BLOCK_GROUP_ITEM, c.length),
    data: encodeBlockGroupItem({ used: blockGroupUsed(f, c), chunk_objectid: OBJ.FIRST_CHUNK_TREE, flags: c.type }),
  }));
  for (const b of allBlocks(f)) {
    items.push({
      key: key(b.bytenr, KEY.METADATA_ITEM, 0), // skinny: the offset is the level
      data: encodeExtentItem({ refs: 1n, generation: f.generation, flags: EXTENT_FLAG.TREE_BLOCK, inlineRefs: [{ type: KEY.TREE_BLOCK_REF, root: b.owner }] }),
    });
  }
  return items;
}

/** The free ranges of a block group: everything its tree blocks do not cover. */
export function freeRanges(f: InitialFs, c: ChunkPlan): { start: bigint; length: bigint }[] {
  const out: { start: bigint; length: bigint }[] = [];
  let cursor = c.logical;
  const size = BigInt(f.nodesize);
  for (const b of blocksIn(f, c)) {
    if (b > cursor) out.push({ start: cursor, length: b - cursor });
    cursor = b + size;
  }
  const end = c.logical + c.length;
  if (end > cursor) out.push({ start: cursor, length: end - cursor });
  return out;
}

function freeSpaceTree(f: InitialFs): ItemInput[] {
  return f.layout.chunks.flatMap((c) => {
    const ranges = freeRanges(f, c);
    return [
      { key: key(c.logical, KEY.FREE_SPACE_INFO, c.length), data: encodeFreeSpaceInfo({ extent_count: ranges.length, flags: 0 }) },
      ...ranges.map((r) => ({ key: key(r.start, KEY.FREE_SPACE_EXTENT, r.length), data: Buffer.alloc(0) })),
    ];
  });
}

function uuidTree(f: InitialFs): ItemInput[] {
  const k = uuidKeyParts(f.ids.fsTreeUuid);
  return [{ key: key(k.objectid, KEY.UUID_KEY_SUBVOL, k.offset), data: encodeUuidItem([OBJ.FS_TREE]) }];
}

/** Every tree's single leaf, items sorted. */
export function initialLeaves(f: InitialFs): LeafContents[] {
  const contents: Record<keyof TreeBlocks, ItemInput[]> = {
    root: rootTree(f), chunk: chunkTree(f), extent: extentTree(f), dev: devTree(f), fs: rootDirectory(f),
    csum: [], uuid: uuidTree(f), freeSpace: freeSpaceTree(f), dataReloc: rootDirectory(f),
  };
  return allBlocks(f).map(({ name, bytenr, owner }) => ({
    name, owner, bytenr, items: [...contents[name]].sort((a, b) => compareKeys(a.key, b.key)),
  }));
}

/** The leaf's bytes, sealed with the filesystem's checksum. */
export function encodeInitialLeaf(f: InitialFs, leaf: LeafContents): Buffer {
  return encodeLeaf({
    bytenr: leaf.bytenr, generation: f.generation, owner: leaf.owner, level: 0,
    fsid: f.ids.fsid, chunkTreeUuid: f.ids.chunkTreeUuid,
  }, leaf.items, f.nodesize, f.csumType);
}

/** sys_chunk_array: the SYSTEM chunk's key and item, the bootstrap for reading the chunk tree. */
function sysChunkArray(f: InitialFs): { bytes: Buffer; size: number } {
  const item = encodeChunkItem(chunkItem(f, f.layout.system));
  const out = Buffer.alloc(2048);
  encodeKey(key(OBJ.FIRST_CHUNK_TREE, KEY.CHUNK_ITEM, f.layout.system.logical), out, 0);
  item.copy(out, 17);
  return { bytes: out, size: 17 + item.length };
}

/** Sum of the block groups' used bytes: the superblock's bytes_used. */
export function bytesUsed(f: InitialFs): bigint {
  return f.layout.chunks.reduce((n, c) => n + blockGroupUsed(f, c), 0n);
}

function emptyBackup(): RootBackup {
  return {
    tree_root: 0n, tree_root_gen: 0n, chunk_root: 0n, chunk_root_gen: 0n, extent_root: 0n, extent_root_gen: 0n,
    fs_root: 0n, fs_root_gen: 0n, dev_root: 0n, dev_root_gen: 0n, csum_root: 0n, csum_root_gen: 0n,
    total_bytes: 0n, bytes_used: 0n, num_devices: 0n, unused_64: Buffer.alloc(32),
    tree_root_level: 0, chunk_root_level: 0, extent_root_level: 0, fs_root_level: 0, dev_root_level: 0,
    csum_root_level: 0, unused_8: Buffer.alloc(10),
  };
}

/**
 * The superblock (without bytenr and checksum, which differ per copy). Backup
 * slot 0 holds this commit's roots: a kernel mount finds it as the newest
 * backup (its tree_root_gen is the generation) and rotates on from there.
 */
export function initialSuperblock(f: InitialFs): Superblock {
  const g = f.generation;
  const b = f.blocks;
  const used = bytesUsed(f);
  const label = Buffer.alloc(LABEL_SIZE);
  label.write(f.label, 'utf8');
  const sys = sysChunkArray(f);
  const backup: RootBackup = {
    ...emptyBackup(),
    tree_root: b.root, tree_root_gen: g, chunk_root: b.chunk, chunk_root_gen: g, extent_root: b.extent, extent_root_gen: g,
    fs_root: b.fs, fs_root_gen: g, dev_root: b.dev, dev_root_gen: g, csum_root: b.csum, csum_root_gen: g,
    total_bytes: f.layout.totalBytes, bytes_used: used, num_devices: 1n,
  };
  return {
    csum: Buffer.alloc(32), fsid: f.ids.fsid, bytenr: 0n, flags: SUPER_FLAG_WRITTEN, magic: MAGIC,
    generation: g, root: b.root, chunk_root: b.chunk, log_root: 0n, log_root_transid: 0n,
    total_bytes: f.layout.totalBytes, bytes_used: used, root_dir_objectid: OBJ.ROOT_TREE_DIR, num_devices: 1n,
    sectorsize: f.sectorsize, nodesize: f.nodesize, leafsize: f.nodesize, stripesize: f.sectorsize,
    sys_chunk_array_size: sys.size, chunk_root_generation: g,
    compat_flags: 0n, compat_ro_flags: MKFS_COMPAT_RO, incompat_flags: MKFS_INCOMPAT,
    csum_type: f.csumType, root_level: 0, chunk_root_level: 0, log_root_level: 0,
    dev_item: deviceItem(f), label,
    // no v1 space cache exists; the uuid tree is complete as written, so the
    // kernel need not rescan subvolumes to rebuild it on first mount
    cache_generation: 0n, uuid_tree_generation: g,
    metadata_uuid: Buffer.alloc(16), nr_global_roots: 0n,
    block_group_root: 0n, block_group_root_generation: 0n, block_group_root_level: 0, pad0: Buffer.alloc(7),
    reserved: Buffer.alloc(192), sys_chunk_array: sys.bytes,
    super_roots: [backup, emptyBackup(), emptyBackup(), emptyBackup()], padding: Buffer.alloc(565),
  };
}

/** A BLOCK_GROUP type's name and profile as mkfs.btrfs prints them. */
export function describeChunk(c: ChunkPlan): { kind: 'data' | 'metadata' | 'system'; profile: 'single' | 'DUP' } {
  const kind = c.type & BLOCK_GROUP.DATA ? 'data' : c.type & BLOCK_GROUP.METADATA ? 'metadata' : 'system';
  return { kind, profile: c.type & BLOCK_GROUP.DUP ? 'DUP' : 'single' };
}

