/**
 * The free space tree against the extent tree. Each block group has one
 * FREE_SPACE_INFO and each FREE_SPACE_INFO a block group; free extents and
 * bitmaps lie inside their block group, in the form (extents or bitmaps) its
 * flags say, and their count of free runs is its extent_count; no free range
 * overlaps an allocated extent; and every byte of a block group is either
 * free or allocated, save the stripes that hold superblock copies.
 */
import { FEATURE_COMPAT_RO, FREE_SPACE_FLAG, KEY, OBJ, SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS } from '../format/constants.js';
import { bitmapRanges, decodeFreeSpaceInfo } from '../format/items/free-space.js';
import { forEachItem } from './walk.js';
import type { BlockGroupRecord, CheckContext } from './context.js';
import { rootLocation, blockGroupOf } from './extents.js';

interface Range { start: bigint; end: bigint }

const byStart = (x: Range, y: Range): number => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0);

/** `l` in start order (stable), sorted only if it is not already. */
function sorted(l: Range[]): Range[] {
  for (let i = 1; i < l.length; i++) if (l[i]!.start < l[i - 1]!.start) return l.sort(byStart);
  return l;
}

/** Superblock copies and the first 1 MiB of the device are never allocated; the 64 KiB stripe around each is excluded. */
function excludedRanges(ctx: CheckContext): Range[] {
  const STRIPE = 64n * 1024n;
  const out: Range[] = [];
  for (const c of ctx.info.chunks.all()) {
    for (const s of c.stripes) {
      for (const m of [0, ...SUPER_MIRROR_OFFSETS]) {
        const p = BigInt(m);
        const len = m === 0 ? 1024n * 1024n : BigInt(SUPER_INFO_SIZE);
        if (p + len <= s.offset || p >= s.offset + c.length) continue;
        const rel = p > s.offset ? p - s.offset : 0n;
        const start = c.logical + (rel / STRIPE) * STRIPE;
        const end = c.logical + (p + len - s.offset + STRIPE - 1n) / STRIPE * STRIPE;
        out.push({ start, end: end < c.logical + c.length ? end : c.logical + c.length });
      }
    }
  }
  return out;
}

export async function checkFreeSpaceTree(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  if ((info.sb.compat_ro_flags & FEATURE_COMPAT_RO.FREE_SPACE_TREE) === 0n) return;
  const loc = rootLocation(ctx, OBJ.FREE_SPACE_TREE);
  if (!loc) {
    report.error('no-free-space-tree', 'free space tree feature is set but there is no free space tree', { tree: OBJ.ROOT_TREE });
    return;
  }
  const free = new Map<bigint, Range[]>();
  const infos = new Map<bigint, { count: number; bitmaps: boolean; key: { objectid: bigint; type: number; offset: bigint } }>();
  let cur: BlockGroupRecord | undefined;
  let stale = false;
  // The tree's layout, as btrfs check reads it: from the end of one FREE_SPACE_INFO's range,
  // the next item must be another FREE_SPACE_INFO, for a block group at or past it; what lies
  // inside a range is that info's. It stops at the first violation; so does this.
  let pos = 0n;
  let layoutBroken = false;
  const layout = (k: { objectid: bigint; type: number; offset: bigint }, where: { tree: bigint; block: bigint; key: typeof k }): void => {
    if (layoutBroken || k.objectid < pos) return;
    if (k.type !== KEY.FREE_SPACE_INFO) {
      report.error('free-space-outside', `Failed to find a space info key at ${pos} [${k.objectid} ${k.type} ${k.offset}]`, where);
      layoutBroken = true;
      return;
    }
    if (ctx.extentTreeOk && !ctx.blockGroups.some((b) => b.start + b.length > k.objectid)) {
      report.error('free-space-info-orphan', `We have a space info key for a block group that doesn't exist [${k.objectid} ${k.offset}]`, where);
      layoutBroken = true;
      return;
    }
    pos = k.objectid + k.offset;
  };
  try {
    await forEachItem(ctx, loc, (key, data, block, slot) => {
      const it = { key, data, block, slot };
      const k = it.key;
      const where = { tree: OBJ.FREE_SPACE_TREE, block: it.block.bytenr, key: k };
      layout(k, where);
      if (k.type === KEY.FREE_SPACE_INFO) {
        const bg = ctx.blockGroups.find((b) => b.start === k.objectid && b.length === k.offset);
        if (!bg) {
          // mkfs (before 6.11) leaves the FREE_SPACE_INFO of its temporary block groups
          // behind, below the first real block group: harmless (the layout check above
          // judges where it lies). One claiming part of a live block group is damage: the
          // kernel stops reading that group's free space at it.
          if (ctx.blockGroups.some((b) => b.start < k.objectid + k.offset && k.objectid < b.start + b.length)) {
            report.error('free-space-info-orphan', `We have a space info key for a block group that doesn't exist [${k.objectid} ${k.offset}], overlapping a live one`, where);
          }
          cur = undefined;
          stale = true;
          return;
        }
        stale = false;
        const fi = decodeFreeSpaceInfo(it.data);
        infos.set(bg.start, { count: fi.extent_count, bitmaps: (fi.flags & FREE_SPACE_FLAG.USING_BITMAPS) !== 0, key: k });
        free.set(bg.start, []);
        cur = bg;
        return;
      }
      if (k.type !== KEY.FREE_SPACE_EXTENT && k.type !== KEY.FREE_SPACE_BITMAP) return;
      const end = k.objectid + k.offset;
      if (stale) return;
      if (!cur || k.objectid < cur.start || end > cur.start + cur.length) {
        report.error('free-space-outside', `free space entry [${k.objectid} ${k.offset}] is not inside the block group of the preceding FREE_SPACE_INFO`, where);
        return;
      }
      const fi = infos.get(cur.start)!;
      const isBitmap = k.type === KEY.FREE_SPACE_BITMAP;
      if (isBitmap !== fi.bitmaps) {
        report.error('free-space-format', `block group ${cur.start} has a ${isBitmap ? 'bitmap' : 'extent'} entry but its FREE_SPACE_INFO says ${fi.bitmaps ? 'bitmaps' : 'extents'}`, where);
      }
      // The key's offset is the length the entry covers: sectors, and for a bitmap one bit per sector, no more.
      const ss = BigInt(info.sectorsize);
      if (k.offset === 0n || k.offset % ss !== 0n || k.objectid % ss !== 0n) {
        report.error('free-space-entry', `free space ${isBitmap ? 'bitmap' : 'extent'} [${k.objectid} ${k.offset}] is not aligned to ${ss}`, where);
        return;
      }
      if (isBitmap) {
        const bits = k.offset / ss;
        const want = (bits + 7n) / 8n;
        if (BigInt(it.data.length) !== want) {
          report.error('free-space-entry', `free space bitmap [${k.objectid} ${k.offset}] is ${it.data.length} bytes, expect ${want}`, where);
          return;
        }
      }
      const list = free.get(cur.start)!;
      const ranges = isBitmap ? bitmapRanges(it.data, k.objectid, info.sectorsize).map((r) => ({ start: r.start, end: r.start + r.length })) : [{ start: k.objectid, end }];
      if (isBitmap && ranges.length && ranges[ranges.length - 1]!.end > end) {
        report.error('free-space-entry', `free space bitmap [${k.objectid} ${k.offset}] marks space past its end free`, where);
        ranges[ranges.length - 1]!.end = end;
        if (ranges[ranges.length - 1]!.start >= end) ranges.pop();
      }
      for (const r of ranges) {
        const last = list[list.length - 1];
        if (last && r.start < last.end) report.error('free-space-overlap', `free space [${r.start} ${r.end - r.start}] overlaps the previous entry`, where);
        // Adjacent bitmap runs (across bitmap items) are one free extent.
        if (last && isBitmap && r.start === last.end) last.end = r.end;
        else list.push({ ...r });
      }
    });
  } catch (e) {
    report.fromError(e, 'free-space-tree-unreadable', { tree: OBJ.FREE_SPACE_TREE });
    return;
  }
  if (!ctx.extentTreeOk) return;
  // Allocated ranges per block group, sorted.
  const alloc = new Map<bigint, Range[]>();
  for (const rec of ctx.extents.values()) {
    const bg = blockGroupOf(ctx.blockGroups, rec.bytenr);
    if (!bg) continue;
    let l = alloc.get(bg.start);
    if (!l) alloc.set(bg.start, l = []);
    l.push({ start: rec.bytenr, end: rec.bytenr + rec.numBytes });
  }
  const excluded = excludedRanges(ctx).sort(byStart);
  const isExcluded = (s: bigint, e: bigint) => {
    // the gap must be covered by excluded ranges
    let pos = s;
    for (const x of excluded) {
      if (x.end <= s || x.start >= e) continue;
      if (x.start > pos) return false;
      if (x.end > pos) pos = x.end;
    }
    return pos >= e;
  };
  for (const bg of ctx.blockGroups) {
    const fi = infos.get(bg.start);
    if (!fi) {
      report.error('free-space-info-missing', `block group [${bg.start} ${bg.length}] has no free space info`, { tree: OBJ.FREE_SPACE_TREE });
      continue;
    }
    const f = free.get(bg.start)!;
    if (f.length !== fi.count) {
      report.error('free-space-count', `free space info of block group ${bg.start} says ${fi.count} extents, found ${f.length}`, { tree: OBJ.FREE_SPACE_TREE, key: fi.key });
    }
    // Both lists come in key order, so they are merged rather than sorted together (a
    // damaged tree may break that order: then they are sorted first). Free first on a tie.
    const a = sorted(alloc.get(bg.start) ?? []);
    const fr = sorted(f);
    let pos = bg.start;
    let prevFree = false;
    for (let i = 0, j = 0; i < fr.length || j < a.length;) {
      const isFree = j >= a.length || (i < fr.length && fr[i]!.start <= a[j]!.start);
      const r = isFree ? fr[i++]! : a[j++]!;
      if (r.start < pos) {
        if (isFree || prevFree) {
          report.error('free-space-wrong', `free space [${r.start} ${r.end - r.start}] in block group ${bg.start} overlaps allocated space`, { tree: OBJ.FREE_SPACE_TREE });
        }
      } else if (r.start > pos && !isExcluded(pos, r.start)) {
        report.error('free-space-missing', `space [${pos} ${r.start - pos}] of block group ${bg.start} is neither free nor allocated`, { tree: OBJ.FREE_SPACE_TREE });
      }
      if (r.end > pos) { pos = r.end; prevFree = isFree; }
    }
    const bgEnd = bg.start + bg.length;
    if (pos < bgEnd && !isExcluded(pos, bgEnd)) {
      report.error('free-space-missing', `space [${pos} ${bgEnd - pos}] of block group ${bg.start} is neither free nor allocated`, { tree: OBJ.FREE_SPACE_TREE });
    }
  }
}
