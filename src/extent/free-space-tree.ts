/**
 * The free space tree (space_cache=v2): per block group a FREE_SPACE_INFO
 * item (key (start FREE_SPACE_INFO length)) and either FREE_SPACE_EXTENT
 * items (key (start FREE_SPACE_EXTENT length), no data) or, when the kernel
 * found that denser, FREE_SPACE_BITMAP items (one bit per sector).
 *
 * Its "free" means "not an extent in the extent tree": the kernel adds a new
 * block group whole and never carves out the superblock mirror stripes, so
 * neither do we. tsbtrfs reads both encodings and always writes extents; the
 * kernel converts to bitmaps by itself when a group becomes fragmented.
 */
import { corrupt } from '../util/errors.js';
import { KEY, OBJ, FREE_SPACE_FLAG } from '../format/constants.js';
import { key } from '../format/key.js';
import { bitmapRanges, decodeFreeSpaceInfo, encodeFreeSpaceInfo, type FreeSpaceInfo } from '../format/items/free-space.js';
import type { BlockReader } from '../tree/block-reader.js';
import { iterItems, lookupItem, type RootLocation } from '../tree/search.js';
import type { TreeItems } from '../tree/tree-store.js';
import { RangeSet } from './range-set.js';

export interface LoadedFreeSpace {
  free: RangeSet;
  info: FreeSpaceInfo;
}

/** A block group's free space as the committed tree records it; undefined if it has no FREE_SPACE_INFO. */
export async function loadFreeSpace(reader: BlockReader, fst: RootLocation, start: bigint, length: bigint, sectorsize: number): Promise<LoadedFreeSpace | undefined> {
  const infoItem = await lookupItem(reader, fst, key(start, KEY.FREE_SPACE_INFO, length));
  if (!infoItem) return undefined;
  const info = decodeFreeSpaceInfo(infoItem.data);
  const free = new RangeSet();
  const end = start + length;
  for await (const it of iterItems(reader, fst, key(start, KEY.FREE_SPACE_INFO, length + 1n), key(end - 1n, 255, 0xffff_ffff_ffff_ffffn))) {
    const s = it.key.objectid;
    const e = s + it.key.offset;
    if (it.key.type !== KEY.FREE_SPACE_EXTENT && it.key.type !== KEY.FREE_SPACE_BITMAP) continue;
    if (e > end || e <= s) throw corrupt(`free space item [${s}, ${e}) outside its block group [${start}, ${end})`, { tree: OBJ.FREE_SPACE_TREE, key: it.key });
    if (it.key.type === KEY.FREE_SPACE_EXTENT) free.add(s, e);
    else for (const r of bitmapRanges(it.data, s, sectorsize)) free.add(r.start, r.start + r.length);
  }
  return { free, info };
}

/**
 * Rewrites one block group's entries so that they describe `want`, touching
 * only the items that differ from `have` (what the tree holds now). A group
 * stored as bitmaps is converted to extents.
 */
export async function writeFreeSpace(
  items: TreeItems, start: bigint, length: bigint, have: RangeSet, haveFlags: number, want: RangeSet,
): Promise<void> {
  const T = OBJ.FREE_SPACE_TREE;
  const end = start + length;
  if (haveFlags & FREE_SPACE_FLAG.USING_BITMAPS) {
    const doomed: { objectid: bigint; type: number; offset: bigint }[] = [];
    for await (const it of items.iter(T, key(start, KEY.FREE_SPACE_INFO, length + 1n), key(end - 1n, 255, 0xffff_ffff_ffff_ffffn))) {
      if (it.key.type === KEY.FREE_SPACE_BITMAP || it.key.type === KEY.FREE_SPACE_EXTENT) doomed.push(it.key);
    }
    for (const k of doomed) await items.delete(T, k);
    have = new RangeSet();
  }
  const wantKeys = new Set<string>();
  for (const r of want) wantKeys.add(`${r.start}:${r.end}`);
  const haveKeys = new Set<string>();
  for (const r of have) {
    haveKeys.add(`${r.start}:${r.end}`);
    if (!wantKeys.has(`${r.start}:${r.end}`)) await items.delete(T, key(r.start, KEY.FREE_SPACE_EXTENT, r.end - r.start));
  }
  for (const r of want) {
    if (!haveKeys.has(`${r.start}:${r.end}`)) await items.insert(T, key(r.start, KEY.FREE_SPACE_EXTENT, r.end - r.start), Buffer.alloc(0));
  }
  const info = encodeFreeSpaceInfo({ extent_count: want.count, flags: 0 });
  const k = key(start, KEY.FREE_SPACE_INFO, length);
  if (await items.lookup(T, k)) await items.update(T, k, info);
  else await items.insert(T, k, info);
}
