/**
 * EXTENT_DATA (fs trees, key (ino EXTENT_DATA file_offset)).
 *   0 generation u64 | 8 ram_bytes u64 | 16 compression u8 | 17 encryption u8
 *  18 other_encoding u16 | 20 type u8                                    (= 21, all types)
 * inline (type 0): the (possibly compressed) file bytes follow, to the end of the item.
 * regular (1) / prealloc (2):
 *  21 disk_bytenr u64 | 29 disk_num_bytes u64 | 37 offset u64 | 45 num_bytes u64   = 53 bytes
 * disk_bytenr 0 is a hole; offset/num_bytes select a window of the (uncompressed) extent.
 */
import { corrupt } from '../../util/errors.js';
import { struct, u8, u16, u64 } from '../layout.js';
import { FILE_EXTENT } from '../constants.js';

interface FileExtentHead {
  generation: bigint;
  ram_bytes: bigint;
  compression: number;
  encryption: number;
  other_encoding: number;
  type: number;
}

export interface FileExtentInline extends FileExtentHead {
  type: typeof FILE_EXTENT.INLINE;
  /** the stored bytes (compressed when compression != 0) */
  data: Buffer;
}

export interface FileExtentRegular extends FileExtentHead {
  /** FILE_EXTENT.REG or PREALLOC (other values are decoded alike, for the checker to judge) */
  type: number;
  disk_bytenr: bigint;
  disk_num_bytes: bigint;
  offset: bigint;
  num_bytes: bigint;
}

export type FileExtentItem = FileExtentInline | FileExtentRegular;

const head = struct<FileExtentHead>('file_extent_item', [
  u64('generation'), u64('ram_bytes'), u8('compression'), u8('encryption'), u16('other_encoding'), u8('type'),
]);
const regular = struct<Omit<FileExtentRegular, keyof FileExtentHead>>('file_extent_item', [
  u64('disk_bytenr'), u64('disk_num_bytes'), u64('offset'), u64('num_bytes'),
]);

export const FILE_EXTENT_INLINE_DATA_START = head.size;
export const FILE_EXTENT_ITEM_SIZE = head.size + regular.size;

export function isInlineExtent(fe: FileExtentItem): fe is FileExtentInline {
  return fe.type === FILE_EXTENT.INLINE;
}

export function decodeFileExtentItem(b: Buffer): FileExtentItem {
  if (b.length < FILE_EXTENT_INLINE_DATA_START) throw corrupt(`file_extent_item: ${b.length} bytes, header needs ${FILE_EXTENT_INLINE_DATA_START}`);
  const h = head.decode(b, 0);
  if (h.type === FILE_EXTENT.INLINE) {
    return { ...h, type: FILE_EXTENT.INLINE, data: Buffer.from(b.subarray(FILE_EXTENT_INLINE_DATA_START)) };
  }
  if (b.length !== FILE_EXTENT_ITEM_SIZE) throw corrupt(`file_extent_item of type ${h.type}: ${b.length} bytes, expected ${FILE_EXTENT_ITEM_SIZE}`);
  return { ...h, ...regular.decode(b, FILE_EXTENT_INLINE_DATA_START) };
}

export function encodeFileExtentItem(fe: FileExtentItem): Buffer {
  if (isInlineExtent(fe)) {
    const out = Buffer.alloc(FILE_EXTENT_INLINE_DATA_START + fe.data.length);
    head.encode(fe, out, 0);
    fe.data.copy(out, FILE_EXTENT_INLINE_DATA_START);
    return out;
  }
  const out = Buffer.alloc(FILE_EXTENT_ITEM_SIZE);
  head.encode(fe, out, 0);
  regular.encode(fe, out, FILE_EXTENT_INLINE_DATA_START);
  return out;
}
