/**
 * The logical → physical map. btrfs addresses everything above the device
 * layer by logical bytenr; chunks (CHUNK_ITEMs) map logical ranges onto
 * stripes of devices. The system chunks needed to read the chunk tree itself
 * are copied into the superblock's sys_chunk_array.
 *
 * Every profile is mapped, so that one member of a multi-device filesystem
 * can be read degraded: which of the copies a reader can actually reach is
 * the block reader's business (it knows which device it has), not the map's.
 * RAID5/6 map to the data stripe only; rebuilding a block from parity is not
 * done, so a data stripe on a missing device cannot be read.
 */
import { corrupt } from '../util/errors.js';
import { DISK_KEY_SIZE, KEY, BLOCK_GROUP, BLOCK_GROUP_PROFILE_MASK, BLOCK_GROUP_TYPE_MASK } from '../format/constants.js';
import { decodeKey } from '../format/key.js';
import { decodeChunkItem, chunkItemSize, type ChunkItem } from '../format/items/chunk-item.js';
import type { Superblock } from '../format/superblock.js';

export interface ChunkMapping {
  logical: bigint;
  length: bigint;
  type: bigint;
  stripeLen: bigint;
  /** stripes per mirror set (RAID10 uses 2); kept as recorded so a checker can validate it */
  subStripes: number;
  /** one entry per stripe; for mirrored profiles each is a full copy */
  stripes: { devid: bigint; offset: bigint }[];
}

/** A physical location of (one copy of) a logical range. */
export interface PhysicalCopy { devid: bigint; physical: bigint }

/** A piece of a logical range that is contiguous on disk, with every copy of it. */
export interface MappedPiece { logical: bigint; length: number; copies: PhysicalCopy[] }

const MIRRORED = BLOCK_GROUP.DUP | BLOCK_GROUP.RAID1 | BLOCK_GROUP.RAID1C3 | BLOCK_GROUP.RAID1C4;
const STRIPED = BLOCK_GROUP.RAID0 | BLOCK_GROUP.RAID10 | BLOCK_GROUP.RAID5 | BLOCK_GROUP.RAID6;

/**
 * Where byte `rel` of chunk `c` lives: every copy of it, and how many bytes
 * from there on stay contiguous (to the end of the stripe element for
 * striped profiles, to the end of the chunk otherwise). The arithmetic is
 * the kernel's btrfs_map_block for reads of mirror 0/1.
 */
function locate(c: ChunkMapping, rel: bigint): { copies: PhysicalCopy[]; run: bigint } {
  const profile = c.type & BLOCK_GROUP_PROFILE_MASK;
  if (profile & MIRRORED || (profile & STRIPED) === 0n) {
    return { copies: c.stripes.map((s) => ({ devid: s.devid, physical: s.offset + rel })), run: c.length - rel };
  }
  const n = BigInt(c.stripes.length);
  const within = rel % c.stripeLen;
  // nr counts stripe elements from the chunk start, then rows (one element per device) once the profile has divided it.
  let nr = rel / c.stripeLen;
  let first: bigint;
  let count = 1n;
  if (profile & BLOCK_GROUP.RAID10) {
    const sub = BigInt(c.subStripes);
    const groups = n / sub;
    first = (nr % groups) * sub;
    nr /= groups;
    count = sub;
  } else if (profile & (BLOCK_GROUP.RAID5 | BLOCK_GROUP.RAID6)) {
    const data = n - (profile & BLOCK_GROUP.RAID6 ? 2n : 1n);
    const index = nr % data;
    nr /= data;
    // Parity rotates one device per row, so the data stripes rotate with it.
    first = (nr + index) % n;
  } else {
    first = nr % n;
    nr /= n;
  }
  const copies: PhysicalCopy[] = [];
  for (let i = first; i < first + count; i++) {
    const s = c.stripes[Number(i)]!;
    copies.push({ devid: s.devid, physical: s.offset + nr * c.stripeLen + within });
  }
  return { copies, run: c.stripeLen - within };
}

export class ChunkMap {
  /** sorted by logical */
  private chunks: ChunkMapping[] = [];

  get size(): number { return this.chunks.length; }

  all(): readonly ChunkMapping[] { return this.chunks; }

  /**
   * Adds a chunk after sanity checks (the kernel's btrfs_check_chunk_valid):
   * a chunk that overlaps another, has no length or bogus stripe data would
   * send reads to the wrong place, so it is rejected as corrupt.
   */
  add(logical: bigint, c: ChunkItem, sectorsize: number): void {
    const where = { key: { objectid: 256n, type: KEY.CHUNK_ITEM, offset: logical } };
    if (c.length === 0n) throw corrupt('chunk length is zero', where);
    if (logical % BigInt(sectorsize) !== 0n) throw corrupt(`chunk start ${logical} not aligned to sectorsize`, where);
    if (c.length % BigInt(sectorsize) !== 0n) throw corrupt(`chunk length ${c.length} not aligned to sectorsize`, where);
    if (c.stripe_len === 0n || (c.stripe_len & (c.stripe_len - 1n)) !== 0n || c.stripe_len > 1n << 32n) {
      throw corrupt(`invalid chunk stripe length ${c.stripe_len}`, where);
    }
    if ((c.type & BLOCK_GROUP_TYPE_MASK) === 0n) throw corrupt(`unrecognized chunk type 0x${c.type.toString(16)}`, where);
    if ((c.type & ~(BLOCK_GROUP_TYPE_MASK | BLOCK_GROUP_PROFILE_MASK)) !== 0n) {
      throw corrupt(`unrecognized chunk type bits 0x${c.type.toString(16)}`, where);
    }
    if (c.sector_size !== 0 && c.sector_size !== sectorsize) {
      throw corrupt(`chunk sector size ${c.sector_size} differs from filesystem's ${sectorsize}`, where);
    }
    const profile = c.type & BLOCK_GROUP_PROFILE_MASK;
    const n = c.stripes.length;
    if (n === 0) throw corrupt('chunk has no stripes', where);
    // The striped profiles divide by these when mapping; the kernel refuses the same chunks.
    if (profile & BLOCK_GROUP.RAID10 && (c.sub_stripes !== 2 || n % 2 !== 0)) {
      throw corrupt(`RAID10 chunk with ${n} stripes and sub_stripes ${c.sub_stripes}`, where);
    }
    if (profile & BLOCK_GROUP.RAID5 && n < 2) throw corrupt(`RAID5 chunk with ${n} stripes`, where);
    if (profile & BLOCK_GROUP.RAID6 && n < 3) throw corrupt(`RAID6 chunk with ${n} stripes`, where);
    if (profile === BLOCK_GROUP.DUP && c.num_stripes !== 2) throw corrupt(`DUP chunk with ${c.num_stripes} stripes`, where);
    if (profile === 0n && c.num_stripes !== 1) throw corrupt(`SINGLE chunk with ${c.num_stripes} stripes`, where);
    const m: ChunkMapping = {
      logical, length: c.length, type: c.type, stripeLen: c.stripe_len, subStripes: c.sub_stripes,
      stripes: c.stripes.map((s) => ({ devid: s.devid, offset: s.offset })),
    };
    // Insert sorted; an identical re-add (sys array chunk found again in the chunk tree) is fine.
    let i = this.chunks.length;
    while (i > 0 && this.chunks[i - 1]!.logical > logical) i--;
    const prev = this.chunks[i - 1];
    if (prev && prev.logical === logical) {
      if (prev.length !== c.length) throw corrupt(`chunk at ${logical} seen with two lengths`, where);
      this.chunks[i - 1] = m;
      return;
    }
    if (prev && prev.logical + prev.length > logical) throw corrupt(`chunk at ${logical} overlaps chunk at ${prev.logical}`, where);
    const next = this.chunks[i];
    if (next && logical + c.length > next.logical) throw corrupt(`chunk at ${logical} overlaps chunk at ${next.logical}`, where);
    this.chunks.splice(i, 0, m);
  }

  /** The chunk containing logical, or undefined. */
  find(logical: bigint): ChunkMapping | undefined {
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = this.chunks[mid]!;
      if (logical < c.logical) hi = mid - 1;
      else if (logical >= c.logical + c.length) lo = mid + 1;
      else return c;
    }
    return undefined;
  }

  /**
   * Every physical copy of [logical, logical+len), which must be contiguous
   * on disk: inside one chunk (tree blocks and extents never cross chunks;
   * one that does is corrupt metadata pointing somewhere it should not) and,
   * for striped profiles, inside one stripe element (the kernel refuses a
   * tree block that crosses one). Ranges that may span stripe elements, such
   * as data extents, go through mapRange.
   */
  map(logical: bigint, len: number): PhysicalCopy[] {
    const c = this.chunkOf(logical, len);
    const { copies, run } = locate(c, logical - c.logical);
    if (BigInt(len) > run) {
      throw corrupt(`range [${logical}, +${len}) crosses a stripe boundary of ${ChunkMap.profileName(c.type)} chunk ${c.logical}`, { block: logical });
    }
    return copies;
  }

  /**
   * [logical, logical+len) split into pieces that are each contiguous on
   * disk, in order, each with all its copies. The range must lie in one chunk.
   */
  mapRange(logical: bigint, len: number): MappedPiece[] {
    const c = this.chunkOf(logical, len);
    const out: MappedPiece[] = [];
    let at = logical;
    let left = BigInt(len);
    while (left > 0n) {
      const { copies, run } = locate(c, at - c.logical);
      const n = run < left ? run : left;
      out.push({ logical: at, length: Number(n), copies });
      at += n;
      left -= n;
    }
    return out;
  }

  private chunkOf(logical: bigint, len: number): ChunkMapping {
    const c = this.find(logical);
    if (!c) throw corrupt(`logical ${logical} is not in any chunk`, { block: logical });
    if (logical + BigInt(len) > c.logical + c.length) {
      throw corrupt(`range [${logical}, +${len}) crosses the end of chunk ${c.logical}`, { block: logical });
    }
    return c;
  }

  /** The chunk's profile name as btrfs prints it. */
  static profileName(type: bigint): string {
    const p = type & BLOCK_GROUP_PROFILE_MASK;
    const names: [bigint, string][] = [
      [BLOCK_GROUP.RAID0, 'RAID0'], [BLOCK_GROUP.RAID1, 'RAID1'], [BLOCK_GROUP.DUP, 'DUP'],
      [BLOCK_GROUP.RAID10, 'RAID10'], [BLOCK_GROUP.RAID5, 'RAID5'], [BLOCK_GROUP.RAID6, 'RAID6'],
      [BLOCK_GROUP.RAID1C3, 'RAID1C3'], [BLOCK_GROUP.RAID1C4, 'RAID1C4'],
    ];
    for (const [bit, name] of names) if (p & bit) return name;
    return 'SINGLE';
  }
}

/**
 * Parses the superblock's sys_chunk_array: a packed list of (disk key,
 * chunk item) pairs, the chunks that hold the chunk tree.
 */
export function parseSysChunkArray(sb: Superblock): { logical: bigint; chunk: ChunkItem }[] {
  const arr = sb.sys_chunk_array;
  const end = sb.sys_chunk_array_size;
  if (end > arr.length) throw corrupt(`sys_chunk_array_size ${end} exceeds ${arr.length}`);
  const out: { logical: bigint; chunk: ChunkItem }[] = [];
  let off = 0;
  while (off < end) {
    if (end - off < DISK_KEY_SIZE) throw corrupt(`sys_chunk_array: truncated key at ${off}`);
    const k = decodeKey(arr, off);
    off += DISK_KEY_SIZE;
    if (k.type !== KEY.CHUNK_ITEM) throw corrupt(`sys_chunk_array: unexpected item type ${k.type} at ${off - DISK_KEY_SIZE}`, { key: k });
    const chunk = decodeChunkItem(arr, off, end - off);
    off += chunkItemSize(chunk.num_stripes);
    out.push({ logical: k.offset, chunk });
  }
  if (out.length === 0) throw corrupt('sys_chunk_array is empty');
  return out;
}
