/**
 * BLOCK_GROUP_ITEM (extent tree or block group tree, key (logical BLOCK_GROUP_ITEM length)).
 *   0 used u64 | 8 chunk_objectid u64 (always FIRST_CHUNK_TREE) | 16 flags u64 (BLOCK_GROUP.*)  = 24
 */
import { struct, u64 } from '../layout.js';

export interface BlockGroupItem {
  used: bigint;
  chunk_objectid: bigint;
  flags: bigint;
}

export const blockGroupItemCodec = struct<BlockGroupItem>('block_group_item', [
  u64('used'), u64('chunk_objectid'), u64('flags'),
]);
export const BLOCK_GROUP_ITEM_SIZE = blockGroupItemCodec.size;

export function decodeBlockGroupItem(b: Buffer): BlockGroupItem { return blockGroupItemCodec.decode(b, 0); }
export function encodeBlockGroupItem(v: BlockGroupItem): Buffer { return blockGroupItemCodec.toBuffer(v); }
