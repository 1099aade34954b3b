/**
 * The free space tree (v2 cache), keyed by block group:
 *   FREE_SPACE_INFO   key (bg_start FREE_SPACE_INFO bg_length):  0 extent_count u32 | 4 flags u32 (USING_BITMAPS 1) = 8
 *   FREE_SPACE_EXTENT key (start FREE_SPACE_EXTENT length):      no body
 *   FREE_SPACE_BITMAP key (start FREE_SPACE_BITMAP length):      one bit per sector, LSB first, set = free
 * and the v1 cache's header in the root tree, key (FREE_SPACE UNTYPED(0) bg_start):
 *   0 location key[17] (the cache inode) | 17 generation u64 | 25 num_entries u64 | 33 num_bitmaps u64  = 41
 */
import { struct, u32, u64, nested } from '../layout.js';
import { keyCodec } from '../key-codec.js';
import type { Key } from '../key.js';

export interface FreeSpaceInfo {
  extent_count: number;
  flags: number;
}

export const freeSpaceInfoCodec = struct<FreeSpaceInfo>('free_space_info', [u32('extent_count'), u32('flags')]);
export const FREE_SPACE_INFO_SIZE = freeSpaceInfoCodec.size;

export function decodeFreeSpaceInfo(b: Buffer): FreeSpaceInfo { return freeSpaceInfoCodec.decode(b, 0); }
export function encodeFreeSpaceInfo(v: FreeSpaceInfo): Buffer { return freeSpaceInfoCodec.toBuffer(v); }

/** Free ranges [start, start+length) of a FREE_SPACE_BITMAP item covering [keyStart, ...). */
export function bitmapRanges(bitmap: Buffer, keyStart: bigint, sectorsize: number): Array<{ start: bigint; length: bigint }> {
  const out: Array<{ start: bigint; length: bigint }> = [];
  const sec = BigInt(sectorsize);
  let runStart = -1;
  const nbits = bitmap.length * 8;
  for (let i = 0; i <= nbits; i++) {
    const set = i < nbits && (bitmap[i >> 3]! >> (i & 7)) & 1;
    if (set && runStart < 0) runStart = i;
    else if (!set && runStart >= 0) {
      out.push({ start: keyStart + BigInt(runStart) * sec, length: BigInt(i - runStart) * sec });
      runStart = -1;
    }
  }
  return out;
}

export interface FreeSpaceHeader {
  location: Key;
  generation: bigint;
  num_entries: bigint;
  num_bitmaps: bigint;
}

export const freeSpaceHeaderCodec = struct<FreeSpaceHeader>('free_space_header', [
  nested(keyCodec, 'location'), u64('generation'), u64('num_entries'), u64('num_bitmaps'),
]);
export const FREE_SPACE_HEADER_SIZE = freeSpaceHeaderCodec.size;

export function decodeFreeSpaceHeader(b: Buffer): FreeSpaceHeader { return freeSpaceHeaderCodec.decode(b, 0); }
export function encodeFreeSpaceHeader(v: FreeSpaceHeader): Buffer { return freeSpaceHeaderCodec.toBuffer(v); }
