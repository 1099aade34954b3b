/**
 * Back references of the extent tree stored as their own items (when they
 * do not fit inline in the EXTENT_ITEM):
 *   TREE_BLOCK_REF   key (bytenr TREE_BLOCK_REF root)     no body
 *   SHARED_BLOCK_REF key (bytenr SHARED_BLOCK_REF parent) no body
 *   EXTENT_DATA_REF  key (bytenr EXTENT_DATA_REF hash(root, objectid, offset)):
 *       0 root u64 | 8 objectid u64 (inode) | 16 offset u64 (file offset - extent offset) | 24 count u32  = 28
 *   SHARED_DATA_REF  key (bytenr SHARED_DATA_REF parent):  0 count u32  = 4
 * The same two bodies appear inside inline refs (see extent-item.ts).
 */
import { struct, u32, u64 } from '../layout.js';
import { crc32cRaw } from '../../util/checksum.js';

export interface ExtentDataRef {
  root: bigint;
  objectid: bigint;
  offset: bigint;
  count: number;
}

export interface SharedDataRef {
  count: number;
}

export const extentDataRefCodec = struct<ExtentDataRef>('extent_data_ref', [
  u64('root'), u64('objectid'), u64('offset'), u32('count'),
]);
export const sharedDataRefCodec = struct<SharedDataRef>('shared_data_ref', [u32('count')]);

export const EXTENT_DATA_REF_SIZE = extentDataRefCodec.size;
export const SHARED_DATA_REF_SIZE = sharedDataRefCodec.size;

export function decodeExtentDataRef(b: Buffer): ExtentDataRef { return extentDataRefCodec.decode(b, 0); }
export function encodeExtentDataRef(v: ExtentDataRef): Buffer { return extentDataRefCodec.toBuffer(v); }
export function decodeSharedDataRef(b: Buffer): SharedDataRef { return sharedDataRefCodec.decode(b, 0); }
export function encodeSharedDataRef(v: SharedDataRef): Buffer { return sharedDataRefCodec.toBuffer(v); }

/**
 * The key offset of a keyed EXTENT_DATA_REF (also the sort order of inline
 * ones): two crc32c's, of the root id and of (objectid, offset), combined as
 * the format defines: (high << 31) ^ low, each crc seeded with ~0 and not inverted.
 */
export function extentDataRefHash(root: bigint, objectid: bigint, offset: bigint): bigint {
  const le = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt.asUintN(64, v)); return b; };
  const high = crc32cRaw(0xffffffff, le(root));
  const low = crc32cRaw(crc32cRaw(0xffffffff, le(objectid)), le(offset));
  return BigInt.asUintN(64, (BigInt(high) << 31n) ^ BigInt(low));
}
