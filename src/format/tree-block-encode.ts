/**
 * The other half of tree-block.ts: a node or leaf back to bytes. Together
 * they are the one place where tree blocks and bytes meet.
 *
 *   [header 101][item 0][item 1]...[item n-1]   free   [data n-1]...[data 1][data 0]
 *   [header 101][key_ptr 0]...[key_ptr n-1]     zeros
 *
 * Leaf data is packed from the end of the block backwards in slot order
 * (slot 0's data ends at the block's end, each later slot's ends where the
 * previous one begins): the layout the tree-checker insists on. Unused space
 * is zeroed so that two encodings of the same contents are the same bytes.
 */
import { BtrfsError } from '../util/errors.js';
import { checksum, csumSize } from '../util/checksum.js';
import {
  BACKREF_REV_SHIFT, CSUM_SIZE, FSID_SIZE, HEADER_FLAG, HEADER_SIZE, ITEM_SIZE, KEY_PTR_SIZE, MAX_LEVEL,
  MIXED_BACKREF_REV, UUID_SIZE,
} from './constants.js';
import { headerCodec, itemCodec, keyPtrCodec, type KeyPtr } from './header.js';
import type { Key } from './key.js';

/** The header fields a writer chooses; csum and nritems follow from the contents. */
export interface BlockHeaderFields {
  bytenr: bigint;
  generation: bigint;
  owner: bigint;
  level: number;
  fsid: Buffer;
  chunkTreeUuid: Buffer;
  /** default: WRITTEN with backref revision MIXED_BACKREF, as the kernel writes every block today */
  flags?: bigint;
}

export interface ItemInput { key: Key; data: Uint8Array }

/** WRITTEN plus backref revision 1 in the top byte: what a block the kernel writes carries. */
export const WRITTEN_BLOCK_FLAGS = HEADER_FLAG.WRITTEN | (MIXED_BACKREF_REV << BACKREF_REV_SHIFT);

/** Bytes of a leaf after the header, shared by item headers and item data. */
export function leafDataSize(nodesize: number): number { return nodesize - HEADER_SIZE; }

/** The largest item data a leaf can hold (BTRFS_MAX_ITEM_SIZE). */
export function maxItemSize(nodesize: number): number { return nodesize - HEADER_SIZE - ITEM_SIZE; }

/** Key pointers per node (BTRFS_NODEPTRS_PER_BLOCK). */
export function maxNodePtrs(nodesize: number): number { return Math.floor((nodesize - HEADER_SIZE) / KEY_PTR_SIZE); }

function writeHeader(buf: Buffer, h: BlockHeaderFields, nritems: number): void {
  if (h.level < 0 || h.level >= MAX_LEVEL) throw new BtrfsError('EINVAL', `tree block level ${h.level} out of range`, { block: h.bytenr });
  if (h.fsid.length !== FSID_SIZE || h.chunkTreeUuid.length !== UUID_SIZE) {
    throw new BtrfsError('EINVAL', 'fsid and chunk tree uuid must be 16 bytes', { block: h.bytenr });
  }
  headerCodec.encode({
    csum: Buffer.alloc(CSUM_SIZE), fsid: h.fsid, bytenr: h.bytenr, flags: h.flags ?? WRITTEN_BLOCK_FLAGS,
    chunk_tree_uuid: h.chunkTreeUuid, generation: h.generation, owner: h.owner, nritems, level: h.level,
  }, buf, 0);
}

/**
 * A sealed leaf image. Items must already be in strictly ascending key order
 * (the caller's B-tree keeps them so; the tree-checker rejects anything else).
 * Throws EOVERFLOW if the items do not fit.
 */
export function encodeLeaf(h: BlockHeaderFields, items: readonly ItemInput[], nodesize: number, csumType: number): Buffer {
  if (h.level !== 0) throw new BtrfsError('EINVAL', `a leaf has level 0, not ${h.level}`, { block: h.bytenr });
  let used = 0;
  for (const it of items) used += ITEM_SIZE + it.data.length;
  if (used > leafDataSize(nodesize)) {
    throw new BtrfsError('EOVERFLOW', `leaf contents need ${used} bytes, only ${leafDataSize(nodesize)} fit`, { block: h.bytenr, tree: h.owner });
  }
  const buf = Buffer.alloc(nodesize);
  writeHeader(buf, h, items.length);
  // Offsets are stored relative to the end of the header, as the format has it.
  let dataEnd = leafDataSize(nodesize);
  for (let slot = 0; slot < items.length; slot++) {
    const it = items[slot]!;
    const offset = dataEnd - it.data.length;
    itemCodec.encode({ key: it.key, offset, size: it.data.length }, buf, HEADER_SIZE + slot * ITEM_SIZE);
    buf.set(it.data, HEADER_SIZE + offset);
    dataEnd = offset;
  }
  sealTreeBlock(buf, csumType);
  return buf;
}

/** A sealed node image; pointers in ascending key order, at least one. */
export function encodeNode(h: BlockHeaderFields, ptrs: readonly KeyPtr[], nodesize: number, csumType: number): Buffer {
  if (h.level < 1) throw new BtrfsError('EINVAL', `a node has level >= 1, not ${h.level}`, { block: h.bytenr });
  if (ptrs.length === 0 || ptrs.length > maxNodePtrs(nodesize)) {
    throw new BtrfsError('EOVERFLOW', `node with ${ptrs.length} pointers, expect [1, ${maxNodePtrs(nodesize)}]`, { block: h.bytenr, tree: h.owner });
  }
  const buf = Buffer.alloc(nodesize);
  writeHeader(buf, h, ptrs.length);
  for (let slot = 0; slot < ptrs.length; slot++) keyPtrCodec.encode(ptrs[slot]!, buf, HEADER_SIZE + slot * KEY_PTR_SIZE);
  sealTreeBlock(buf, csumType);
  return buf;
}

/** Writes the block checksum over bytes 32.. into the csum field (rest of the 32 bytes zero). */
export function sealTreeBlock(buf: Buffer, csumType: number): void {
  const sum = checksum(csumType, buf.subarray(CSUM_SIZE));
  buf.fill(0, 0, CSUM_SIZE);
  sum.copy(buf, 0, 0, csumSize(csumType));
}
