/**
 * The checksum tree against the data: csum items do not overlap and cover
 * only data extents. Loaded before the fs trees are checked, so each file
 * extent can ask how much of its range has checksums (`csumBytesIn`). With
 * `verifyData`, every covered sector is read and its checksum compared.
 */
import { KEY, OBJ } from '../format/constants.js';
import { checksum } from '../util/checksum.js';
import { forEachItem } from './walk.js';
import type { CheckContext } from './context.js';
import { rootLocation } from './extents.js';
import type { U64 } from './u64.js';

export async function loadCsums(ctx: CheckContext, verifyData: boolean): Promise<void> {
  const { info, report } = ctx;
  const loc = rootLocation(ctx, OBJ.CSUM_TREE);
  if (!loc) {
    report.error('no-csum-tree', 'no root item for the checksum tree', { tree: OBJ.ROOT_TREE });
    return;
  }
  const ss = BigInt(info.sectorsize);
  const cs = info.csumSize;
  const starts: bigint[] = [];
  const ends: bigint[] = [];
  const dataExtents = [...ctx.extents.values()].filter((e) => !e.metadata).sort((a, b) => (a.bytenr < b.bytenr ? -1 : 1));
  let di = 0;
  // Data is read after the tree walk: reads cannot wait inside it.
  const toVerify: { sums: Buffer; start: bigint; where: { tree: bigint; block: bigint; key: { objectid: bigint; type: number; offset: bigint } } }[] = [];
  try {
    await forEachItem(ctx, loc, (key, data, block, slot) => {
      const it = { key, data, block, slot };
      const k = it.key;
      if (k.objectid !== OBJ.EXTENT_CSUM || k.type !== KEY.EXTENT_CSUM) return;
      const where = { tree: OBJ.CSUM_TREE, block: it.block.bytenr, key: k };
      const start = k.offset;
      const end = start + BigInt(Math.floor(it.data.length / cs)) * ss;
      const n = starts.length;
      const lastEnd = n ? ends[n - 1]! : -1n;
      if (n && start < lastEnd) {
        report.error('csum-overlap', `csum overlap, current bytenr=${start} prev_end=${lastEnd}, eb=${it.block.bytenr} slot=${it.slot}`, where);
      }
      if (n && start <= lastEnd) { if (end > lastEnd) ends[n - 1] = end; } else { starts.push(start); ends.push(end); }
      // Each csummed sector must lie in a data extent (checked as one walk over both sorted lists).
      if (ctx.extentTreeOk) {
        let pos = start;
        while (pos < end) {
          while (di < dataExtents.length && dataExtents[di]!.bytenr + dataExtents[di]!.numBytes <= pos) di++;
          const d = dataExtents[di];
          if (!d || d.bytenr > pos) {
            const to = d && d.bytenr < end ? d.bytenr : end;
            // With an unreplayed log, csums may be committed for extents only the log references yet.
            if (info.logRoot) report.warning('csum-no-extent', `csum exists for ${pos}-${to} but there is no extent record`, where);
            else report.error('csum-no-extent', `csum exists for ${pos}-${to} but there is no extent record`, where);
            pos = to;
            continue;
          }
          pos = d.bytenr + d.numBytes;
        }
        di = Math.max(0, di - 1);
      }
      if (verifyData) toVerify.push({ sums: it.data, start, where });
    });
  } catch (e) {
    report.fromError(e, 'csum-tree-unreadable', { tree: OBJ.CSUM_TREE });
    return;
  }
  for (const v of toVerify) await verifySectors(ctx, v.sums, v.start, v.where);
  // As doubles: exact for every address a real filesystem has (below 2^53).
  ctx.csums = { starts: Float64Array.from(starts, Number), ends: Float64Array.from(ends, Number) };
}

async function verifySectors(ctx: CheckContext, sums: Buffer, start: bigint, where: { tree: bigint; block: bigint; key: { objectid: bigint; type: number; offset: bigint } }): Promise<void> {
  const { info, report } = ctx;
  const ss = BigInt(info.sectorsize);
  const cs = info.csumSize;
  for (let i = 0; i < sums.length / cs; i++) {
    const logical = start + BigInt(i) * ss;
    let data: Buffer;
    try {
      data = await info.readData(logical, info.sectorsize);
    } catch (e) {
      report.fromError(e, 'data-unreadable', where);
      return;
    }
    report.stats.bytesChecked += info.sectorsize;
    const want = sums.subarray(i * cs, (i + 1) * cs);
    const got = checksum(info.csumType, data);
    if (!got.subarray(0, cs).equals(want)) {
      report.error('data-csum', `mirror 1 bytenr ${logical} csum 0x${got.subarray(0, cs).toString('hex')} expected csum 0x${want.toString('hex')}`, where);
    }
  }
}

/**
 * Bytes of [start, start+len) that have checksums. When the checksum tree
 * could not be read, everything counts as covered: its damage is reported
 * once, not again for every file.
 */
export function csumBytesIn(ctx: CheckContext, start: U64, len: U64): number {
  const c = ctx.csums;
  const s0 = Number(start);
  const l = Number(len);
  if (!c) return l;
  const end = s0 + l;
  // The first merged range that ends after start.
  let lo = 0;
  let hi = c.starts.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (c.ends[mid]! <= s0) lo = mid + 1; else hi = mid;
  }
  let found = 0;
  for (let i = lo; i < c.starts.length && c.starts[i]! < end; i++) {
    const s = c.starts[i]! > s0 ? c.starts[i]! : s0;
    const e = c.ends[i]! < end ? c.ends[i]! : end;
    if (e > s) found += e - s;
  }
  return found;
}
