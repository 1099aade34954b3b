/**
 * The chunk layer agrees with itself: every chunk item (including the
 * superblock's copies of the system chunks, which must be the chunk tree's
 * own) passes the kernel's validity rules; every stripe names a device of
 * this filesystem; every chunk has exactly one block group of the same
 * start, length and flags; every stripe of a chunk has its dev extent and
 * every dev extent its chunk; dev extents stay inside their device and do
 * not overlap; a device's bytes_used is the sum of its dev extents.
 */
import { BLOCK_GROUP, BLOCK_GROUP_PROFILE_MASK, BLOCK_GROUP_TYPE_MASK, DISK_KEY_SIZE, FEATURE_INCOMPAT, KEY, OBJ } from '../format/constants.js';
import { decodeKey } from '../format/key.js';
import { decodeDevExtent } from '../format/items/dev-extent.js';
import { CHUNK_ITEM_HEAD_SIZE, STRIPE_SIZE, chunkItemSize } from '../format/items/chunk-item.js';
import { devItem, type DevItem } from '../format/items/dev-item.js';
import { type ChunkMapping } from '../volumes/chunk-map.js';
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

const STRIPE_LEN = 64n * 1024n;

/** A chunk item as stored: where it came from, its raw bytes, and the key it sits under. */
interface RawChunk { where: string; logical: bigint; bytes: Buffer; itemSize?: number; key: { objectid: bigint; type: number; offset: bigint } }

/**
 * Why a chunk item cannot be used, or undefined when it can: the rules the
 * kernel and btrfs check apply before trusting a chunk (a bad one would send
 * reads to the wrong place). `sys` marks a superblock copy, which must be a
 * system chunk.
 */
function invalidChunk(c: RawChunk, sectorsize: number, mixed: boolean, sys: boolean): string | undefined {
  const b = c.bytes;
  if (b.length < CHUNK_ITEM_HEAD_SIZE + STRIPE_SIZE) return `invalid chunk item size, have ${b.length} expect >= ${CHUNK_ITEM_HEAD_SIZE + STRIPE_SIZE}`;
  const length = b.readBigUInt64LE(0);
  const stripeLen = b.readBigUInt64LE(16);
  const type = b.readBigUInt64LE(24);
  const sectorSize = b.readUInt32LE(40);
  const n = b.readUInt16LE(44);
  const sub = b.readUInt16LE(46);
  if (n === 0) return 'invalid num_stripes, have 0 expect non-zero';
  if (c.itemSize !== undefined && chunkItemSize(n) !== c.itemSize) return `invalid chunk item size, have ${c.itemSize} expect ${chunkItemSize(n)}`;
  if (sys && chunkItemSize(n) > b.length) return `invalid num_stripes: ${n}`;
  const ss = BigInt(sectorsize);
  if (c.logical % ss !== 0n) return `invalid chunk logical ${c.logical}`;
  if (sectorSize !== sectorsize) return `invalid chunk sectorsize ${sectorSize}`;
  if (length === 0n || length % ss !== 0n) return `invalid chunk length ${length}`;
  if (stripeLen !== STRIPE_LEN) return `invalid chunk stripe length: ${stripeLen}`;
  // The kernel caps a chunk at 2^32 stripes, which catches bit flips in the length's high bits.
  if (length >= 0xffffffffn * STRIPE_LEN) return `chunk length too large: have ${length}`;
  if (sys && (type & BLOCK_GROUP.SYSTEM) === 0n) return `invalid chunk type ${type}`;
  if ((type & ~(BLOCK_GROUP_TYPE_MASK | BLOCK_GROUP_PROFILE_MASK)) !== 0n) {
    return `unrecognized chunk type: ${type & ~(BLOCK_GROUP_TYPE_MASK | BLOCK_GROUP_PROFILE_MASK)}`;
  }
  if ((type & BLOCK_GROUP_TYPE_MASK) === 0n) return `missing chunk type flag: ${type}`;
  const profile = type & BLOCK_GROUP_PROFILE_MASK;
  if ((profile & (profile - 1n)) !== 0n) return `conflicting chunk type detected: ${type}`;
  if ((type & BLOCK_GROUP.SYSTEM) !== 0n && (type & (BLOCK_GROUP.DATA | BLOCK_GROUP.METADATA)) !== 0n) return `system chunk with data or metadata type: ${type}`;
  if (!mixed && (type & BLOCK_GROUP.DATA) !== 0n && (type & BLOCK_GROUP.METADATA) !== 0n) return `mixed chunk type in non-mixed mode: ${type}`;
  // Each profile fixes how many stripes it needs; RAID10 mirrors pairs, so its sub_stripes is 2.
  const ok =
    profile === BLOCK_GROUP.RAID10 ? sub === 2 && n % 2 === 0 && n >= 2 :
    profile === BLOCK_GROUP.RAID1 ? n === 2 :
    profile === BLOCK_GROUP.RAID1C3 ? n === 3 :
    profile === BLOCK_GROUP.RAID1C4 ? n === 4 :
    profile === BLOCK_GROUP.RAID5 ? n >= 2 :
    profile === BLOCK_GROUP.RAID6 ? n >= 3 :
    profile === BLOCK_GROUP.DUP ? n === 2 :
    profile === 0n ? n === 1 :
    true;
  return ok ? undefined : `Invalid num_stripes:sub_stripes ${n}:${sub} for profile ${profile}`;
}

/** The chunk tree as stored: its chunk items and its DEV_ITEMs, keys checked. */
export async function readChunkTree(ctx: CheckContext): Promise<{ chunks: RawChunk[]; devs: { key: { objectid: bigint; type: number; offset: bigint }; item: DevItem }[] }> {
  const chunks: RawChunk[] = [];
  const devs: { key: { objectid: bigint; type: number; offset: bigint }; item: DevItem }[] = [];
  for await (const it of iterItems(ctx.info.reader, ctx.info.chunkRoot)) {
    if (it.key.type === KEY.CHUNK_ITEM) {
      chunks.push({ where: 'chunk tree', logical: it.key.offset, bytes: it.data, itemSize: it.data.length, key: it.key });
    } else if (it.key.type === KEY.DEV_ITEM && it.data.length >= 98) {
      devs.push({ key: it.key, item: devItem.decode(it.data, 0) });
    }
  }
  return { chunks, devs };
}

/** The superblock's copies of the system chunks, raw. */
function sysChunks(ctx: CheckContext): RawChunk[] {
  const sb = ctx.info.sb;
  const arr = sb.sys_chunk_array;
  const end = Math.min(sb.sys_chunk_array_size, arr.length);
  const out: RawChunk[] = [];
  let off = 0;
  while (off + DISK_KEY_SIZE <= end) {
    const k = decodeKey(arr, off);
    off += DISK_KEY_SIZE;
    if (k.type !== KEY.CHUNK_ITEM || off + CHUNK_ITEM_HEAD_SIZE > end) break;
    const n = arr.readUInt16LE(off + 44);
    const size = chunkItemSize(Math.max(n, 1));
    out.push({ where: 'superblock sys_chunk_array', logical: k.offset, bytes: arr.subarray(off, Math.min(end, off + size)), key: k });
    off += size;
  }
  return out;
}

export async function checkChunks(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const chunks = info.chunks.all();
  const bgByStart = new Map(ctx.blockGroups.map((bg) => [bg.start, bg]));
  const mixed = (info.sb.incompat_flags & FEATURE_INCOMPAT.MIXED_GROUPS) !== 0n;
  let tree: Awaited<ReturnType<typeof readChunkTree>>;
  try {
    tree = await readChunkTree(ctx);
  } catch (e) {
    report.fromError(e, 'chunk-tree-unreadable', { tree: OBJ.CHUNK_TREE });
    return;
  }
  const where = (c: RawChunk) => ({ tree: OBJ.CHUNK_TREE, key: { objectid: 256n, type: KEY.CHUNK_ITEM, offset: c.logical } });
  const sys = sysChunks(ctx);
  for (const c of [...sys, ...tree.chunks]) {
    const why = invalidChunk(c, info.sectorsize, mixed, c.itemSize === undefined);
    if (why) report.error('chunk-invalid', `Chunk[256, 228, ${c.logical}] in ${c.where}: ${why}`, where(c));
  }
  // The superblock's copies are what a mount reads the chunk tree with; they must be the chunk tree's own items.
  const treeByLogical = new Map(tree.chunks.map((c) => [c.logical, c]));
  for (const c of sys) {
    const t = treeByLogical.get(c.logical);
    if (!t) report.error('sys-chunk-missing', `Chunk[256, 228, ${c.logical}] of the superblock's sys_chunk_array is not in the chunk tree`, where(c));
    else if (!t.bytes.equals(c.bytes)) {
      // io_align, io_width and owner are never read, sub_stripes only for RAID10: a difference there changes no mapping.
      const used = (b: Buffer) => {
        const raid10 = b.length >= 32 && (b.readBigUInt64LE(24) & BLOCK_GROUP.RAID10) !== 0n;
        const x = Buffer.from(b);
        x.fill(0, 8, 16);
        x.fill(0, 32, 40);
        if (!raid10 && x.length >= 48) x.fill(0, 46, 48);
        return x;
      };
      if (used(t.bytes).equals(used(c.bytes))) report.warning('sys-chunk-mismatch', `Chunk[256, 228, ${c.logical}] differs between the superblock's sys_chunk_array and the chunk tree in unused fields`, where(c));
      else report.error('sys-chunk-mismatch', `Chunk[256, 228, ${c.logical}] differs between the superblock's sys_chunk_array and the chunk tree`, where(c));
    }
  }
  // Every stripe must name a device of this filesystem by devid and uuid.
  const devByid = new Map(tree.devs.map((d) => [d.item.devid, d.item]));
  // Dev items carry the uuid tree blocks carry: the metadata uuid once the fsid was changed without rewriting metadata.
  const fsid = info.sb.incompat_flags & FEATURE_INCOMPAT.METADATA_UUID ? info.sb.metadata_uuid : info.sb.fsid;
  for (const d of tree.devs) {
    const dw = { tree: OBJ.CHUNK_TREE, key: d.key };
    if (d.key.objectid !== OBJ.DEV_ITEMS || d.key.offset !== d.item.devid) {
      report.error('dev-item-key', `dev item key (${d.key.objectid} DEV_ITEM ${d.key.offset}) does not match devid ${d.item.devid}`, dw);
    }
    if (!d.item.fsid.equals(fsid)) report.error('dev-item-fsid', `dev item ${d.item.devid} belongs to filesystem ${d.item.fsid.toString('hex')}, not this one`, dw);
  }
  for (const c of tree.chunks) {
    const n = c.bytes.length >= CHUNK_ITEM_HEAD_SIZE ? c.bytes.readUInt16LE(44) : 0;
    for (let i = 0; i < n && CHUNK_ITEM_HEAD_SIZE + (i + 1) * STRIPE_SIZE <= c.bytes.length; i++) {
      const at = CHUNK_ITEM_HEAD_SIZE + i * STRIPE_SIZE;
      const devid = c.bytes.readBigUInt64LE(at);
      const dev = devByid.get(devid);
      if (!dev) report.error('chunk-stripe-device', `Chunk[256, 228, ${c.logical}] stripe ${i} is on device ${devid}, which has no dev item`, where(c));
      else if (!dev.uuid.equals(c.bytes.subarray(at + 16, at + 32))) report.error('chunk-stripe-device', `Chunk[256, 228, ${c.logical}] stripe ${i}: device ${devid} is missing (dev uuid mismatch)`, where(c));
    }
  }
  const treeChunkTypes = new Map(tree.chunks.filter((c) => c.bytes.length >= 32).map((c) => [c.logical, { length: c.bytes.readBigUInt64LE(0), type: c.bytes.readBigUInt64LE(24) }]));
  if (ctx.extentTreeOk) {
    for (const [logical, c] of treeChunkTypes) {
      const bg = bgByStart.get(logical);
      if (!bg || bg.length !== c.length || bg.flags !== c.type) {
        report.error('chunk-no-block-group', `Chunk[256, 228, ${logical}]: length(${c.length}), offset(${logical}), type(${c.type}) is not found in block group` +
          (bg ? ` (block group [${bg.start} ${bg.length}] has flags ${bg.flags})` : ''),
          { tree: OBJ.CHUNK_TREE, key: { objectid: 256n, type: KEY.CHUNK_ITEM, offset: logical } });
      }
    }
    const chunkStarts = new Set(treeChunkTypes.keys());
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
  const devTotal = new Map(tree.devs.map((d) => [d.item.devid, d.item.total_bytes]));
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
        report.error('dev-extent-no-chunk', `Device extent[${devid}, ${physical}, ${de.length}] didn't find the relative chunk.`, where);
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
  for (const { item: d } of tree.devs) {
    const used = devUsed.get(d.devid) ?? 0n;
    if (used !== d.bytes_used) {
      report.error('dev-bytes-used', `Dev extent's total-byte(${used}) is not equal to byte-used(${d.bytes_used}) in dev[1, 216, ${d.devid}]`,
        { tree: OBJ.CHUNK_TREE, key: { objectid: OBJ.DEV_ITEMS, type: KEY.DEV_ITEM, offset: d.devid } });
    }
  }
}
