/**
 * The checksum tree against the data: csum items do not overlap and cover
 * only data extents; every extent a file needs checksums for (its inode
 * lacks NODATASUM and the extent is written, not preallocated) is covered
 * in full. With `verifyData`, every covered sector is read and its checksum
 * compared.
 */
import { KEY, OBJ } from '../format/constants.js';
import { checksum } from '../util/checksum.js';
import { iterItems } from '../tree/search.js';
import type { CheckContext } from './context.js';
import { rootLocation } from './extents.js';
import type { FileExtentUse } from './inodes.js';

interface Covered { start: bigint; end: bigint }

export async function checkCsums(ctx: CheckContext, uses: FileExtentUse[], verifyData: boolean): Promise<void> {
  const { info, report } = ctx;
  const loc = rootLocation(ctx, OBJ.CSUM_TREE);
  if (!loc) {
    report.error('no-csum-tree', 'no root item for the checksum tree', { tree: OBJ.ROOT_TREE });
    return;
  }
  const ss = BigInt(info.sectorsize);
  const cs = info.csumSize;
  const covered: Covered[] = [];
  const dataExtents = [...ctx.extents.values()].filter((e) => !e.metadata).sort((a, b) => (a.bytenr < b.bytenr ? -1 : 1));
  let di = 0;
  try {
    for await (const it of iterItems(info.reader, loc)) {
      const k = it.key;
      if (k.objectid !== OBJ.EXTENT_CSUM || k.type !== KEY.EXTENT_CSUM) continue;
      const where = { tree: OBJ.CSUM_TREE, block: it.block.bytenr, key: k };
      const start = k.offset;
      const end = start + BigInt(it.data.length / cs) * ss;
      const last = covered[covered.length - 1];
      if (last && start < last.end) {
        report.error('csum-overlap', `csum overlap, current bytenr=${start} prev_end=${last.end}, eb=${it.block.bytenr} slot=${it.slot}`, where);
      }
      if (last && start <= last.end) { if (end > last.end) last.end = end; } else covered.push({ start, end });
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
      if (verifyData) {
        for (let i = 0; i < it.data.length / cs; i++) {
          const logical = start + BigInt(i) * ss;
          let data: Buffer;
          try {
            data = await info.readData(logical, info.sectorsize);
          } catch (e) {
            report.fromError(e, 'data-unreadable', where);
            break;
          }
          report.stats.bytesChecked += info.sectorsize;
          const want = it.data.subarray(i * cs, (i + 1) * cs);
          const got = checksum(info.csumType, data);
          if (!got.subarray(0, cs).equals(want)) {
            report.error('data-csum', `mirror 1 bytenr ${logical} csum 0x${got.subarray(0, cs).toString('hex')} expected csum 0x${want.toString('hex')}`, where);
          }
        }
      }
    }
  } catch (e) {
    report.fromError(e, 'csum-tree-unreadable', { tree: OBJ.CSUM_TREE });
    return;
  }
  const coveredFully = (s: bigint, e: bigint): boolean => {
    let lo = 0;
    let hi = covered.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = covered[mid]!;
      if (c.end <= s) lo = mid + 1;
      else if (c.start > s) hi = mid - 1;
      else return c.end >= e;
    }
    return false;
  };
  const reported = new Set<string>();
  for (const u of uses) {
    report.stats.dataExtents++;
    if (u.nodatasum || u.prealloc) continue;
    const s = u.compressed ? u.disk_bytenr : u.disk_bytenr + u.offset;
    const e = u.compressed ? u.disk_bytenr + u.disk_num_bytes : s + u.num_bytes;
    if (coveredFully(s, e)) continue;
    const id = `${u.tree}/${u.inode}`;
    if (reported.has(id)) continue;
    reported.add(id);
    report.error('csum-missing', `root ${u.tree} inode ${u.inode} errors: some csum missing (extent [${u.disk_bytenr} ${u.disk_num_bytes}])`, { tree: u.tree, key: u.key, inode: u.inode });
  }
}
