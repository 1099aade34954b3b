/**
 * What the passes of a check share: the opened filesystem, the reporter, and
 * the facts one pass gathers for the next (the roots, the extent tree as
 * recorded, the references actually found by walking every tree).
 */
import type { FsInfo } from '../tree/fs-info.js';
import type { RootItem } from '../format/items/root-item.js';
import type { Key } from '../format/key.js';
import type { Reporter } from './report.js';
import type { AddrKey, U64 } from './u64.js';

export interface RootRecord {
  objectid: bigint;
  /** the ROOT_ITEM key offset (transid for snapshots, source root for reloc trees) */
  offset: bigint;
  item: RootItem;
  /** the drop of a deleted subvolume has started: part of its tree is already freed */
  partiallyDropped: boolean;
}

/** One backref as the extent tree records it (inline or keyed). */
export type RecordedRef =
  | { kind: 'tree'; root: bigint }
  | { kind: 'shared-block'; parent: bigint }
  // Inode number and offset as U64s (numbers below 2^53): one of these is kept per data extent reference.
  | { kind: 'data'; root: bigint; objectid: U64; offset: U64; count: number }
  | { kind: 'shared-data'; parent: bigint; count: number };

export interface ExtentRecord {
  bytenr: bigint;
  /** bytes on disk: key offset of EXTENT_ITEM, nodesize for METADATA_ITEM */
  numBytes: bigint;
  refs: bigint;
  generation: bigint;
  flags: bigint;
  metadata: boolean;
  /** level from METADATA_ITEM key offset or tree_block_info */
  level?: number;
  recorded: RecordedRef[];
  /** METADATA_ITEM (key offset = level) rather than EXTENT_ITEM (key offset = numBytes): with bytenr, the item's key */
  skinny: boolean;
  block: bigint;
}

export interface BlockGroupRecord { start: bigint; length: bigint; used: bigint; flags: bigint; key: Key }

/** References found by walking trees, keyed the way backrefs are. */
export interface FoundRefs {
  /** tree blocks: bytenr (as an AddrKey) -> list of refs and the block's level */
  blocks: Map<AddrKey, { level: number; refs: RecordedRef[]; tree: bigint }>;
  /** data extents: disk_bytenr -> refs and the disk_num_bytes the file extents claimed (the first, and any different ones) */
  data: Map<AddrKey, FoundData>;
}

/**
 * A data extent as the file extents found it. One is kept per data extent of
 * the filesystem, so the first file extent that names it is kept as numbers
 * (tree, inode, file offset) rather than as a key object and its bigints.
 */
export interface FoundData {
  numBytes: bigint;
  otherSizes?: bigint[];
  refs: RecordedRef[];
  tree: bigint;
  inode: U64;
  fileOffset: U64;
}

/** A tree block's outgoing references: child blocks of a node, or (bytenr, disk_num_bytes) pairs of a leaf's file extents. */
export interface BlockShape { children?: bigint[]; extents?: bigint[] }

export interface CheckContext {
  info: FsInfo;
  report: Reporter;
  roots: RootRecord[];
  /** by bytenr, as an AddrKey (see u64.ts) */
  extents: Map<AddrKey, ExtentRecord>;
  blockGroups: BlockGroupRecord[];
  found: FoundRefs;
  /** the extent tree could be read completely: reference counts can be compared */
  extentTreeOk: boolean;
  /** every tree could be walked completely: missing references mean something */
  treesOk: boolean;
  /** roots whose trees were not (fully) walked; references from them cannot be verified */
  unverifiableRoots: Set<bigint>;
  /** every tree block reached, so SHARED_* parents can be told from garbage */
  reachedBlocks: Set<AddrKey>;
  /** when quotas are on: what each tree block points to, for accounting extents below interior nodes */
  shapes?: Map<bigint, BlockShape>;
  /** the checksum tree's coverage as merged [start, end) ranges, sorted; absent when it could not be read */
  csums?: { starts: Float64Array; ends: Float64Array };
  /** progress within the current phase: what it is on, and the share of the phase done (0 to 1) */
  onProgress?: (detail: string, within: number) => void;
}
