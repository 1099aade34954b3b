/**
 * What the COW B-tree needs from the transaction below it: verified block
 * reads, block allocation and freeing, and a place for new block images.
 * The transaction layer implements it over the extent allocator and the
 * device; MemoryTreeStore implements it for tests.
 */
import type { TreeBlock } from '../format/tree-block.js';
import type { Key } from '../format/key.js';
import type { BlockView } from './cow-node.js';

export interface TreeStore {
  readonly nodesize: number;
  /** the running transaction's generation: blocks carrying it may be rewritten in place */
  readonly generation: bigint;
  /** the fsid tree blocks carry (metadata_uuid when that feature is on) */
  readonly fsid: Buffer;
  readonly chunkTreeUuid: Buffer;
  readonly csumType: number;
  /** A verified block; blocks written (writeDirty) in this transaction come first. */
  read(bytenr: bigint, level: number, generation?: bigint): Promise<TreeBlock>;
  /** A new bytenr for a COWed or new block of tree `owner`. */
  allocBlock(owner: bigint, level: number): Promise<bigint>;
  /** The block is no longer referenced by tree `owner` (reported once per block). */
  freeBlock(bytenr: bigint, owner: bigint, level: number): void;
  /**
   * Tree `owner` is about to change block `old` of an earlier generation: a
   * new bytenr for its copy. The store moves the tree's reference from the
   * old block to the copy (and, for blocks shared with snapshots, gives
   * the copy's children their references: the kernel's update_ref_for_cow).
   */
  cowBlock(old: BlockView, owner: bigint): Promise<bigint>;
  /**
   * Tree `owner` lets go of block `old` of an earlier generation because
   * another of its blocks took the items over (a merge). For a block shared
   * with snapshots that is a copy in all but name: the references move as
   * cowBlock moves them (the snapshot keeps reaching the children through
   * `old`), then the tree's own reference to `old` goes.
   */
  dropBlock(old: BlockView, owner: bigint): Promise<void>;
  /** The block's new image, to be written at commit. Only for blocks of this transaction. */
  writeDirty(bytenr: bigint, buf: Buffer): void;
}

/**
 * Item-level access to every tree of a running transaction, by tree
 * objectid: what the extent, free-space and POSIX layers build on. Reads see
 * the transaction's own changes. Item data returned is shared: do not modify.
 */
export interface TreeItems {
  lookup(tree: bigint, k: Key): Promise<Buffer | undefined>;
  /** Items with min <= key <= max in key order. Do not change the tree while iterating. */
  iter(tree: bigint, min: Key, max: Key): AsyncGenerator<{ key: Key; data: Buffer }>;
  /** The last item with min <= key <= max, or undefined. */
  last(tree: bigint, min: Key, max: Key): Promise<{ key: Key; data: Buffer } | undefined>;
  insert(tree: bigint, k: Key, data: Uint8Array): Promise<void>;
  update(tree: bigint, k: Key, data: Uint8Array): Promise<void>;
  delete(tree: bigint, k: Key): Promise<void>;
  resize(tree: bigint, k: Key, newSize: number, opts?: { fromFront?: boolean }): Promise<void>;
}
