/**
 * The chunk layer agrees with itself: every chunk has exactly one block
 * group of the same start, length and type; every stripe of a chunk has its
 * dev extent and every dev extent its chunk; dev extents stay inside their
 * device and do not overlap; a device's bytes_used is the sum of its dev extents.
 */
import { BLOCK_GROUP, BLOCK_GROUP_PROFILE_MASK, BLOCK_GROUP_TYPE_MASK, KEY, OBJ } from '../format/constants.js';
import { decodeDevExtent } from '../format/items/dev-extent.js';
import type { ChunkMapping } from '../volumes/chunk-map.js';
import { iterItems } from '../tree/search.js';
import type { CheckContext } from './context.js';
import { rootLocation } from './extents.js';

/** Bytes one stripe of the chunk occupies on its device. */
export function stripeLength(c: ChunkMapping): bigint {
  const n = BigInt(c.stripes.length);
  if (c.type & BLOCK_GROUP.RAID0) return c.length / n;
  if (c.type & BLOCK_GROUP.RAID10) return (c.length * 2n) / n;
  if (c.type & BLOCK_GROUP.RAID5) return c.length / (n - 1n);
  if (c.type & BLOCK_GROUP.RAID6) return c.length / (n - 2n);
  return c.length;
}

const chunkName = (c: ChunkMapping) => `Chunk[256, 228, ${c.logical}]`;

export async function checkChunks(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const chunks = info.chunks.all();
  const bgByStart = new Map(ctx.blockGroups.map((bg) => [bg.start, bg]));
  const mask = BLOCK_GROUP_TYPE_MASK | BLOCK_GROUP_PROFILE_MASK;
  if (ctx.extentTreeOk) {
    for (const c of chunks) {
      const bg = bgByStart.get(c.logical);
      if (!bg || bg.length !== c.length || (bg.flags & mask) !== (c.type & mask)) {
        report.error('chunk-no-block-group', `${chunkName(c)}: length(${c.length}), offset(${c.logical}), type(${c.type}) is not found in block group`,
          { tree: OBJ.CHUNK_TREE, key: { objectid: 256n, type: KEY.CHUNK_ITEM, offset: c.logical } });
      }
    }
    const chunkStarts = new Set(chunks.map((c) => c.logical));
    for (const bg of ctx.blockGroups) {
      if (!chunkStarts.has(bg.start)) {
        report.error('block-group-no-chunk', `block group [${bg.start} ${bg.length}] has no chunk`, { key: bg.key });
      }
    }
  }

  // (devid, physical) -> chunk stripe expecting a dev extent there
  const stripes = new Map<string, { chunk: ChunkMapping; length: bigint; seen: boolean }>();
  for (const c of chunks) {
    for (const s of c.stripes) stripes.set(`${s.devid}:${s.offset}`, { chunk: c, length: stripeLength(c), seen: false });
  }
  const devTotal = new Map(info.devItems.map((d) => [d.devid, d.total_bytes]));
  const devUsed = new Map<bigint, bigint>();
  const loc = rootLocation(ctx, OBJ.DEV_TREE);
  if (!loc) {
    report.error('no-dev-tree', 'no root item for the device tree', { tree: OBJ.ROOT_TREE });
    return;
  }
  let prev: { devid: bigint; end: bigint } | undefined;
  try {
    for await (const it of iterItems(info.reader, loc)) {
      if (it.key.type !== KEY.DEV_EXTENT) continue;
      const devid = it.key.objectid;
      const physical = it.key.offset;
      const where = { tree: OBJ.DEV_TREE, block: it.block.bytenr, key: it.key };
      const de = decodeDevExtent(it.data);
      devUsed.set(devid, (devUsed.get(devid) ?? 0n) + de.length);
      if (prev && prev.devid === devid && physical < prev.end) {
        report.error('dev-extent-overlap', `dev extent devid ${devid} physical offset ${physical} overlaps the previous one ending at ${prev.end}`, where);
      }
      prev = { devid, end: physical + de.length };
      const total = devTotal.get(devid);
      if (total === undefined) {
        report.error('dev-extent-no-device', `dev extent devid ${devid} physical offset ${physical} belongs to no device`, where);
      } else if (physical + de.length > total) {
        report.error('dev-extent-beyond-device', `dev extent devid ${devid} physical offset ${physical} len ${de.length} is beyond device boundary ${total}`, where);
      }
      const s = stripes.get(`${devid}:${physical}`);
      if (!s || s.chunk.logical !== de.chunk_offset) {
        // btrfs check only warns: an orphan dev extent wastes space but harms nothing.
        report.warning('dev-extent-no-chunk', `Device extent[${devid}, ${physical}, ${de.length}] didn't find the relative chunk.`, where);
        continue;
      }
      s.seen = true;
      if (s.length !== de.length) {
        report.error('dev-extent-length', `Device extent[${devid}, ${physical}, ${de.length}] length differs from its chunk's stripe length ${s.length}`, where);
      }
    }
  } catch (e) {
    report.fromError(e, 'dev-tree-unreadable', { tree: OBJ.DEV_TREE });
    return;
  }
  for (const [k, s] of stripes) {
    if (s.seen) continue;
    const [devid, off] = k.split(':');
    report.error('chunk-no-dev-extent', `${chunkName(s.chunk)} stripe[${devid}, ${off}] is not found in dev extent`,
      { tree: OBJ.CHUNK_TREE, key: { objectid: 256n, type: KEY.CHUNK_ITEM, offset: s.chunk.logical } });
  }
  for (const d of info.devItems) {
    const used = devUsed.get(d.devid) ?? 0n;
    if (used !== d.bytes_used) {
      report.error('dev-bytes-used', `Dev extent's total-byte(${used}) is not equal to byte-used(${d.bytes_used}) in dev[1, 216, ${d.devid}]`,
        { tree: OBJ.CHUNK_TREE, key: { objectid: OBJ.DEV_ITEMS, type: KEY.DEV_ITEM, offset: d.devid } });
    }
  }
}
