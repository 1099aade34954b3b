/**
 * What the COW B-tree needs from the transaction below it: verified block
 * reads, block allocation and freeing, and a place for new block images.
 * The transaction layer implements it over the extent allocator and the
 * device; MemoryTreeStore implements it for tests.
 */
import type { TreeBlock } from '../format/tree-block.js';

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
  /** The block's new image, to be written at commit. Only for blocks of this transaction. */
  writeDirty(bytenr: bigint, buf: Buffer): void;
}
