/**
 * Block groups and the space in them (the kernel's block-group.c and
 * free-space-cache.c, reduced to what one writer needs): which bytes of each
 * group are free, allocation of tree blocks and data extents, space freed
 * during a transaction held back ("pinned") until it commits, and new chunks
 * when a kind of group runs full.
 *
 * Nothing here writes to a tree. Allocation runs inside B-tree operations
 * (a split needs a block), where no other tree may be changed, so every
 * change is recorded in memory — used bytes, new chunks, free space — and
 * the transaction writes the items at commit.
 */
import { BtrfsError } from '../util/errors.js';
import { BLOCK_GROUP, BLOCK_GROUP_PROFILE_MASK, BLOCK_GROUP_TYPE_MASK, SUPER_MIRROR_OFFSETS, SUPER_INFO_SIZE } from '../format/constants.js';
import type { ChunkItem } from '../format/items/chunk-item.js';
import type { ChunkMap } from '../volumes/chunk-map.js';
import { RangeSet, alignDown, alignUp } from './range-set.js';

export type SpaceKind = 'data' | 'metadata' | 'system';

const STRIPE_LEN = 65536n;
const MiB = 1024n * 1024n;
/** the kernel never puts chunks in the first MiB of a device (boot loaders, the primary superblock) */
export const DEVICE_RESERVED = MiB;

export function kindOf(flags: bigint): SpaceKind {
  if (flags & BLOCK_GROUP.DATA) return 'data';
  if (flags & BLOCK_GROUP.SYSTEM) return 'system';
  return 'metadata';
}

const TYPE_BITS: Record<SpaceKind, bigint> = { data: BLOCK_GROUP.DATA, metadata: BLOCK_GROUP.METADATA, system: BLOCK_GROUP.SYSTEM };

export interface FreeSpaceLoad { free: RangeSet; flags: number }

export class BlockGroup {
  /** free per the free space tree's meaning (not an extent); undefined until loaded */
  free: RangeSet | undefined;
  /** what the free space tree holds for this group now (for writing only the difference) */
  stored: RangeSet | undefined;
  storedFlags = 0;
  /** extents freed in this transaction: free in the tree after commit, not allocatable before */
  readonly pinned = new RangeSet();
  /** the super-mirror stripes inside the group: never allocated */
  readonly excluded = new RangeSet();
  /** created in this transaction: its chunk, device extents and items are written at commit */
  isNew = false;
  /** used or free space changed since the last commit */
  dirty = false;
  /** where the last allocation ended: allocation continues from there, for locality */
  cursor: bigint;

  constructor(readonly start: bigint, readonly length: bigint, readonly flags: bigint, public used: bigint) {
    this.cursor = start;
  }

  get end(): bigint { return this.start + this.length; }
  get kind(): SpaceKind { return kindOf(this.flags); }
}

export interface NewChunk { logical: bigint; chunk: ChunkItem }

export interface SpaceOptions {
  sectorsize: number;
  nodesize: number;
  devid: bigint;
  devUuid: Buffer;
  deviceBytes: bigint;
  /** profile bits for each kind (DUP or 0 = single) */
  profiles: Record<SpaceKind, bigint>;
  /** reads a group's committed free space tree entries (or undefined if it has none) */
  loadFree: (bg: BlockGroup) => Promise<FreeSpaceLoad | undefined>;
}

export class SpaceManager {
  private groups: BlockGroup[] = [];
  readonly newChunks: NewChunk[] = [];
  /** physical bytes of the device used by chunks */
  readonly devUsed = new RangeSet();

  constructor(private readonly opts: SpaceOptions, private readonly chunks: ChunkMap) {}

  /** Adds a committed block group (at open). */
  addGroup(bg: BlockGroup): void {
    const c = this.chunks.find(bg.start);
    if (!c || c.logical !== bg.start || c.length !== bg.length) {
      throw new BtrfsError('EUCLEAN', `block group [${bg.start}, +${bg.length}) has no matching chunk`, { block: bg.start });
    }
    for (const s of c.stripes) this.excludeSuperMirrors(bg, s.offset);
    this.groups.push(bg);
    this.groups.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  all(): readonly BlockGroup[] { return this.groups; }

  groupOf(bytenr: bigint): BlockGroup {
    let lo = 0;
    let hi = this.groups.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const g = this.groups[mid]!;
      if (bytenr < g.start) hi = mid - 1;
      else if (bytenr >= g.end) lo = mid + 1;
      else return g;
    }
    throw new BtrfsError('EUCLEAN', `bytenr ${bytenr} is in no block group`, { block: bytenr });
  }

  /** Total bytes used in every group (the superblock's bytes_used). */
  get bytesUsed(): bigint {
    let n = 0n;
    for (const g of this.groups) n += g.used;
    return n;
  }

  private excludeSuperMirrors(bg: BlockGroup, stripeOffset: bigint): void {
    for (const m of SUPER_MIRROR_OFFSETS) {
      const phys = BigInt(m);
      if (phys + BigInt(SUPER_INFO_SIZE) <= stripeOffset || phys >= stripeOffset + bg.length) continue;
      const rel = alignDown(phys - stripeOffset, STRIPE_LEN);
      const s = bg.start + (rel < 0n ? 0n : rel);
      const e = s + STRIPE_LEN > bg.end ? bg.end : s + STRIPE_LEN;
      bg.excluded.add(s, e);
    }
  }

  async load(bg: BlockGroup): Promise<RangeSet> {
    if (bg.free) return bg.free;
    const got = await this.opts.loadFree(bg);
    if (!got) {
      throw new BtrfsError('EUCLEAN', `block group [${bg.start}, +${bg.length}) has no free space tree entry`, { block: bg.start });
    }
    bg.free = got.free;
    bg.stored = got.free.clone();
    bg.storedFlags = got.flags;
    return bg.free;
  }

  /**
   * `len` bytes (or, for data, at least `minLen` of them) in a group of
   * `kind`, aligned to `align`; a new chunk when no group has room for all
   * `len`. Shorter only when the device has no room for that chunk (the
   * kernel's order: find_free_extent allocates a chunk before
   * btrfs_reserve_extent shrinks the request). ENOSPC when nothing fits.
   */
  async allocate(kind: SpaceKind, len: bigint, minLen: bigint, align: bigint): Promise<{ start: bigint; len: bigint }> {
    const whole = await this.tryGroups(kind, len, len, align);
    if (whole) return whole;
    let grew = true;
    try {
      this.newChunk(kind, len);
    } catch (e) {
      if (!(e instanceof BtrfsError && e.code === 'ENOSPC')) throw e;
      grew = false;
    }
    const got = (grew ? await this.tryGroups(kind, len, len, align) : undefined) ?? await this.tryGroups(kind, len, minLen, align);
    if (got) return got;
    throw new BtrfsError('ENOSPC', `no ${kind} space for ${len} bytes`);
  }

  private async tryGroups(kind: SpaceKind, len: bigint, minLen: bigint, align: bigint): Promise<{ start: bigint; len: bigint } | undefined> {
    const candidates = this.groups.filter((g) => g.kind === kind && (g.flags & BLOCK_GROUP_TYPE_MASK) === TYPE_BITS[kind]);
    for (const g of candidates) {
      if (g.length - g.used < minLen) continue;
      const free = await this.load(g);
      const avoid = unionOf(g.excluded, g.pinned);
      const at = free.findFit(len, align, avoid, g.cursor) ?? free.findFit(len, align, avoid, g.start);
      if (at !== undefined) return this.take(g, at, len);
    }
    if (minLen >= len) return undefined;
    let best: { g: BlockGroup; start: bigint; end: bigint } | undefined;
    for (const g of candidates) {
      if (g.length - g.used < minLen) continue;
      const r = (await this.load(g)).largest(align, unionOf(g.excluded, g.pinned));
      if (r && r.end - r.start >= minLen && (!best || r.end - r.start > best.end - best.start)) best = { g, ...r };
    }
    return best && this.take(best.g, best.start, best.end - best.start);
  }

  private take(g: BlockGroup, start: bigint, len: bigint): { start: bigint; len: bigint } {
    g.free!.remove(start, start + len);
    g.used += len;
    g.dirty = true;
    g.cursor = start + len;
    return { start, len };
  }

  /**
   * Gives back the tail [start, end) of an extent allocated in this
   * transaction and never committed: it is free again at once.
   */
  unallocate(start: bigint, end: bigint): void {
    const g = this.groupOf(start);
    g.free!.add(start, end);
    g.used -= end - start;
    g.dirty = true;
    if (g.cursor > start) g.cursor = start;
  }

  /** The extent [start, start+len) is no longer referenced: free once the transaction commits. */
  async release(start: bigint, len: bigint): Promise<void> {
    const g = this.groupOf(start);
    // the free space tree entry must be known before it can be rewritten
    await this.load(g);
    if (start + len > g.end) throw new BtrfsError('EUCLEAN', `extent [${start}, +${len}) crosses its block group's end`, { block: start });
    g.pinned.add(start, start + len);
    g.used -= len;
    g.dirty = true;
  }

  /**
   * Marks [start, start+len) allocated when the extent tree says so but the
   * loaded free space does not (never for consistent images; kept so a
   * caller can assert).
   */
  isFree(start: bigint, len: bigint): boolean {
    const g = this.groupOf(start);
    return g.free ? g.free.contains(start, start + len) : false;
  }

  /** After commit: pinned space becomes allocatable; the tree now holds what `free` says. */
  committed(): void {
    for (const g of this.groups) {
      for (const r of g.pinned) g.free?.add(r.start, r.end);
      g.pinned.remove(g.start, g.end);
      if (g.free) g.stored = g.free.clone();
      g.storedFlags = 0;
      g.isNew = false;
      g.dirty = false;
    }
    this.newChunks.length = 0;
  }

  /** The free space tree's view of `g` as it must be written now. */
  wantedFree(g: BlockGroup): RangeSet {
    const w = g.free!.clone();
    for (const r of g.pinned) w.add(r.start, r.end);
    return w;
  }

  /**
   * Carves a new chunk out of free device space and registers its block
   * group, all in memory; its items are written at commit.
   */
  private newChunk(kind: SpaceKind, need: bigint): void {
    const o = this.opts;
    const profile = o.profiles[kind];
    const copies = profile & BLOCK_GROUP.DUP ? 2 : 1;
    const total = o.deviceBytes;
    const cap = kind === 'data' ? 1024n * MiB : kind === 'metadata' ? 256n * MiB : 32n * MiB;
    let size = alignDown(total / 10n, 16n * MiB);
    if (size > cap) size = cap;
    if (size < 16n * MiB) size = kind === 'system' ? 8n * MiB : 16n * MiB;
    const minimum = alignUp(need < MiB ? MiB : need, MiB);
    if (size < minimum) size = minimum;
    const holes = new RangeSet([{ start: DEVICE_RESERVED, end: alignDown(total, MiB) }]);
    for (const r of this.devUsed) holes.remove(r.start, r.end);
    const pick = (sz: bigint): bigint[] | undefined => {
      const taken = new RangeSet();
      const out: bigint[] = [];
      for (let i = 0; i < copies; i++) {
        const at = holes.findFit(sz, MiB, taken);
        if (at === undefined) return undefined;
        taken.add(at, at + sz);
        out.push(at);
      }
      return out;
    };
    let offsets = pick(size);
    while (!offsets && size > minimum) {
      size = alignDown(size / 2n, MiB);
      if (size < minimum) size = minimum;
      offsets = pick(size);
    }
    if (!offsets) throw new BtrfsError('ENOSPC', `no device space left for a new ${kind} chunk of ${size} bytes`);
    let logical = 0n;
    for (const c of this.chunks.all()) if (c.logical + c.length > logical) logical = c.logical + c.length;
    logical = alignUp(logical === 0n ? MiB : logical, MiB);
    const chunk: ChunkItem = {
      length: size, owner: 2n, stripe_len: STRIPE_LEN, type: TYPE_BITS[kind] | (profile & BLOCK_GROUP_PROFILE_MASK),
      io_align: Number(STRIPE_LEN), io_width: Number(STRIPE_LEN), sector_size: o.sectorsize,
      num_stripes: copies, sub_stripes: 1,
      stripes: offsets.map((offset) => ({ devid: o.devid, offset, dev_uuid: o.devUuid })),
    };
    this.chunks.add(logical, chunk, o.sectorsize);
    for (const off of offsets) this.devUsed.add(off, off + size);
    const g = new BlockGroup(logical, size, chunk.type, 0n);
    g.free = new RangeSet([{ start: logical, end: logical + size }]);
    g.stored = new RangeSet();
    g.isNew = true;
    g.dirty = true;
    this.addGroup(g);
    this.newChunks.push({ logical, chunk });
  }

  /** Device bytes used by chunks (the dev item's bytes_used). */
  get deviceBytesUsed(): bigint { return this.devUsed.bytes; }

  /** Bytes a data write of this size could still get: free data space plus unallocated device space. */
  async dataRoom(): Promise<bigint> {
    let n = 0n;
    for (const g of this.groups) if (g.kind === 'data') n += g.length - g.used;
    const holes = new RangeSet([{ start: DEVICE_RESERVED, end: alignDown(this.opts.deviceBytes, MiB) }]);
    for (const r of this.devUsed) holes.remove(r.start, r.end);
    const copies = this.opts.profiles.data & BLOCK_GROUP.DUP ? 2n : 1n;
    return n + holes.bytes / copies;
  }
}

function unionOf(a: RangeSet, b: RangeSet): RangeSet {
  if (b.count === 0) return a;
  if (a.count === 0) return b;
  const u = a.clone();
  for (const r of b) u.add(r.start, r.end);
  return u;
}
