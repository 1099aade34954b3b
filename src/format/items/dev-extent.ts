/**
 * DEV_EXTENT (dev tree, key (devid DEV_EXTENT physical_offset)): which chunk
 * owns a range of a device.
 *   0 chunk_tree u64 (CHUNK_TREE) | 8 chunk_objectid u64 (FIRST_CHUNK_TREE) | 16 chunk_offset u64 (logical)
 *  24 length u64 | 32 chunk_tree_uuid[16]   = 48
 */
import { struct, u64, bytes } from '../layout.js';

export interface DevExtent {
  chunk_tree: bigint;
  chunk_objectid: bigint;
  chunk_offset: bigint;
  length: bigint;
  chunk_tree_uuid: Buffer;
}

export const devExtentCodec = struct<DevExtent>('dev_extent', [
  u64('chunk_tree'), u64('chunk_objectid'), u64('chunk_offset'), u64('length'), bytes(16, 'chunk_tree_uuid'),
]);
export const DEV_EXTENT_SIZE = devExtentCodec.size;

export function decodeDevExtent(b: Buffer): DevExtent { return devExtentCodec.decode(b, 0); }
export function encodeDevExtent(v: DevExtent): Buffer { return devExtentCodec.toBuffer(v); }
