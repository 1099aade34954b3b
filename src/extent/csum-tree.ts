/**
 * The checksum tree: items keyed (EXTENT_CSUM_OBJECTID EXTENT_CSUM logical)
 * holding one checksum per data sector from `logical` on. Written with the
 * data, removed when the data extent is freed. Items made by the kernel may
 * span several extents, so removal trims and splits items, never assumes
 * they line up with extents.
 */
import { corrupt } from '../util/errors.js';
import { KEY, OBJ, ITEM_SIZE } from '../format/constants.js';
import { key } from '../format/key.js';
import { leafDataSize } from '../format/tree-block-encode.js';
import type { TreeItems } from '../tree/tree-store.js';

const C = OBJ.CSUM_TREE;
const CK = OBJ.EXTENT_CSUM;

export interface CsumGeometry { sectorsize: number; csumSize: number; nodesize: number }

/** Checksums per item at most (the kernel's MAX_CSUM_ITEMS, so its merging code never overflows a leaf). */
export function maxCsumsPerItem(g: CsumGeometry): number {
  return Math.floor((leafDataSize(g.nodesize) - 2 * ITEM_SIZE) / g.csumSize) - 1;
}

/** Inserts checksums (concatenated, one per sector) for the data at `start`. The range must have none yet. */
export async function insertCsums(items: TreeItems, g: CsumGeometry, start: bigint, csums: Buffer): Promise<void> {
  const per = maxCsumsPerItem(g);
  const n = csums.length / g.csumSize;
  for (let i = 0; i < n; i += per) {
    const m = Math.min(per, n - i);
    await items.insert(C, key(CK, KEY.EXTENT_CSUM, start + BigInt(i) * BigInt(g.sectorsize)), csums.subarray(i * g.csumSize, (i + m) * g.csumSize));
  }
}

/** Removes every checksum of sectors in [start, end). */
export async function deleteCsums(items: TreeItems, g: CsumGeometry, start: bigint, end: bigint): Promise<void> {
  const sec = BigInt(g.sectorsize);
  const cs = g.csumSize;
  const cover = (size: number): bigint => BigInt(size / cs) * sec;
  const hits: { off: bigint; data: Buffer }[] = [];
  const first = await items.last(C, key(CK, KEY.EXTENT_CSUM, 0n), key(CK, KEY.EXTENT_CSUM, start));
  if (first && first.key.offset + cover(first.data.length) > start) hits.push({ off: first.key.offset, data: first.data });
  for await (const it of items.iter(C, key(CK, KEY.EXTENT_CSUM, start + 1n), key(CK, KEY.EXTENT_CSUM, end - 1n))) {
    hits.push({ off: it.key.offset, data: it.data });
  }
  for (const h of hits) {
    if (h.data.length % cs !== 0) throw corrupt(`csum item of ${h.data.length} bytes is not a multiple of ${cs}`, { tree: C, key: key(CK, KEY.EXTENT_CSUM, h.off) });
    const hEnd = h.off + cover(h.data.length);
    const k = key(CK, KEY.EXTENT_CSUM, h.off);
    const keepHead = start > h.off ? Number((start - h.off) / sec) * cs : 0;
    const tailFrom = end < hEnd ? Number((end - h.off) / sec) * cs : h.data.length;
    const tail = Buffer.from(h.data.subarray(tailFrom));
    if (keepHead > 0) await items.resize(C, k, keepHead);
    else await items.delete(C, k);
    if (tail.length > 0) await items.insert(C, key(CK, KEY.EXTENT_CSUM, end), tail);
  }
}
