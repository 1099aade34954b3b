/**
 * The chunk layer agrees with itself: every chunk (including the superblock's
 * copies of the system chunks) has the stripe counts its profile requires;
 * every chunk has exactly one block
 * group of the same start, length and type; every stripe of a chunk has its
 * dev extent and every dev extent its chunk; dev extents stay inside their
 * device and do not overlap; a device's bytes_used is the sum of its dev extents.
 */
import { BLOCK_GROUP, BLOCK_GROUP_PROFILE_MASK, BLOCK_GROUP_TYPE_MASK, KEY, OBJ } from '../format/constants.js';
import { decodeDevExtent } from '../format/items/dev-extent.js';
import { parseSysChunkArray, type ChunkMapping } from '../volumes/chunk-map.js';
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

/**
 * Why a chunk's stripe counts cannot belong to its profile, or undefined when
 * they can. These are the kernel's chunk validity rules: each profile fixes
 * how many copies/stripes it needs, and RAID10 mirrors pairs of stripes, so
 * its sub_stripes must be 2 (a 0 there makes the kernel divide by zero).
 */
function badStripeCounts(type: bigint, n: number, subStripes: number): string | undefined {
  const profile = type & BLOCK_GROUP_PROFILE_MASK;
  if (n === 0) return 'no stripes';
  // A block group has exactly one profile.
  if ((profile & (profile - 1n)) !== 0n) return `more than one profile bit set in 0x${profile.toString(16)}`;
  const ok =
    profile === BLOCK_GROUP.RAID10 ? subStripes === 2 :
    profile === BLOCK_GROUP.RAID1 ? n === 2 :
    profile === BLOCK_GROUP.RAID1C3 ? n === 3 :
    profile === BLOCK_GROUP.RAID1C4 ? n === 4 :
    profile === BLOCK_GROUP.RAID5 ? n >= 2 :
    profile === BLOCK_GROUP.RAID6 ? n >= 3 :
    profile === BLOCK_GROUP.DUP ? n === 2 :
    profile === 0n ? n === 1 :
    true;
  return ok ? undefined : `Invalid num_stripes:sub_stripes ${n}:${subStripes} for profile ${profile}`;
}

export async function checkChunks(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const chunks = info.chunks.all();
  const bgByStart = new Map(ctx.blockGroups.map((bg) => [bg.start, bg]));
  const mask = BLOCK_GROUP_TYPE_MASK | BLOCK_GROUP_PROFILE_MASK;
  // The superblock's copies of the system chunks are read before the chunk tree and
  // are what a mount trusts first, so they are validated on their own: the chunk
  // tree's copy replaces them in the chunk map and would hide a corrupt one.
  const candidates: { where: string; logical: bigint; type: bigint; n: number; sub: number }[] = [];
  try {
    for (const s of parseSysChunkArray(info.sb)) {
      candidates.push({ where: 'superblock sys_chunk_array', logical: s.logical, type: s.chunk.type, n: s.chunk.stripes.length, sub: s.chunk.sub_stripes });
    }
  } catch (e) {
    report.fromError(e, 'sys-chunk-array', { tree: OBJ.CHUNK_TREE });
  }
  for (const c of chunks) candidates.push({ where: 'chunk tree', logical: c.logical, type: c.type, n: c.stripes.length, sub: c.subStripes });
  for (const c of candidates) {
    const why = badStripeCounts(c.type, c.n, c.sub);
    if (why) {
      report.error('chunk-invalid', `Chunk[256, 228, ${c.logical}] in ${c.where}: ${why}`,
        { tree: OBJ.CHUNK_TREE, key: { objectid: 256n, type: KEY.CHUNK_ITEM, offset: c.logical } });
    }
  }
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
