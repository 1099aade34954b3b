/**
 * The screen: a quick verdict per fs tree, "every inode is sound" or "look
 * closer", that keeps no name. Each name of an inode must be found three
 * times: as a DIR_ITEM and a DIR_INDEX of its parent and as the inode's own
 * INODE_REF (see inodes.ts). Instead of keeping the names and pairing them,
 * each occurrence adds a fingerprint of (parent, name, file type), and of
 * (parent, index, name, file type), to sums kept per inode and per kind, in
 * two independent 32-bit lanes. An inode is sound when its own items are
 * (the same rules as the exact pass, inode-items.ts), its link count equals
 * the number of each kind, its names are distinct, and the sums agree.
 *
 * Sums can be taken apart, which is what makes snapshots cheap: a snapshot
 * is screened from a kept tree that shares most of its leaves by
 * subtracting what the leaves it no longer has contributed, adding what its
 * new leaves contribute, and reading again only the own items of inodes
 * those leaves touch. Everything lives in one typed array per tree, which
 * the garbage collector never walks.
 *
 * The hash seeds are drawn per process, so an image cannot be made to aim
 * at a collision; a chance one (two different sets of names with equal sums
 * in both lanes) has odds near 2^-64 per inode. The screen reports nothing:
 * a tree it does not pass goes to the exact pass, which finds and words
 * every finding (and is what runs when the screen is off).
 */
import { randomBytes } from 'node:crypto';
import { HEADER_SIZE, ITEM_SIZE, KEY, OBJ, S_IFMT } from '../format/constants.js';
import type { TreeBlock } from '../format/tree-block.js';
import { keyEquals, type Key } from '../format/key.js';
import type { CheckContext, RootRecord } from './context.js';
import { FREE_SPACE_OBJECTID, FT_OF_MODE, LeafScanner, Own, type ItemSink, type SubvolEntry } from './inode-items.js';
import { forEachLeaf, prefetch, readBlock, type LeafPos } from './walk.js';
import { addrKey, fromBig, keyAddr, readU64, type AddrKey, type U64 } from './u64.js';

// One record per inode slot, FIELDS int32s wide.
const OWN = 0; // 0: no own items; SOUND: its own items are sound; else: not
const NLINK = 1;
const REF_N = 2;
const REF_A = 3;
const REF_B = 4;
const REF_IA = 5;
const REF_IB = 6;
const ITEM_N = 7;
const ITEM_A = 8;
const ITEM_B = 9;
const INDEX_N = 10;
const INDEX_A = 11;
const INDEX_B = 12;
const FIELDS = 13;
const SOUND = 1;
const UNSOUND = 2;

const SEED = randomBytes(8);
const SEED_A = SEED.readInt32LE(0);
const SEED_B = SEED.readInt32LE(4);

// The two lanes of the last name hashed (module state: no object per name).
let laneA = 0;
let laneB = 0;

/** Hashes name bytes d[at, end) into laneA (FNV-1a) and laneB (a multiply-rotate hash), from the seeds. */
function hashName(d: Buffer, at: number, end: number): void {
  let a = SEED_A;
  let b = SEED_B;
  for (let i = at; i < end; i++) {
    const c = d[i]!;
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(((b << 5) | (b >>> 27)) ^ c, 0x9e3779b1);
  }
  laneA = a;
  laneB = b ^ (end - at);
}

function mix(h: number, w: number): number {
  h ^= Math.imul(w, 0xcc9e2d51);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

const hi32 = (x: number) => (x / 4294967296) >>> 0;

/** The DIR_ITEM fingerprint of a name: (parent, name, file type). */
const itemPrint = (lane: number, dir: number, ft: number) => fmix(mix(mix(mix(lane, dir >>> 0), hi32(dir)), ft | 0x100));

/** The DIR_INDEX fingerprint of a name: (parent, index, name, file type). */
const indexPrint = (lane: number, dir: number, index: number, ft: number) =>
  fmix(mix(mix(mix(mix(mix(lane, dir >>> 0), hi32(dir)), index >>> 0), hi32(index)), ft | 0x200));

/** What the screen keeps of one tree, for snapshots of it. */
interface Screen {
  tree: bigint;
  /**
   * its leaves by bytenr (below 2^53 on any real filesystem), with the
   * generation and first key its pointers (verified against the block) gave
   */
  leaves: Map<AddrKey, LeafSeen>;
  /** FIELDS int32s per inode slot */
  a: Int32Array;
  subvol: (SubvolEntry & { leaf: bigint })[];
  /** it met something the screen does not follow (an inode number past 2^53, say) */
  odd: boolean;
}

interface LeafSeen { generation: bigint; firstKey: Key | undefined }

export interface ScreenResult { sound: boolean; inodes: number; subvol: (SubvolEntry & { leaf: bigint })[] }

/** Screens kept for snapshots; each is FIELDS int32s per inode. */
const KEEP_SCREENS = 4;

/** Inode numbers below this are looked up by index (4 bytes each, grown as they are met). */
const DIRECT_LIMIT = 1 << 22;

/**
 * Inode number -> slot, numbered in order of first sight: an array indexed
 * by inode number for the usual small ones, an open-addressing table in two
 * typed arrays for the rest (a Map costs a few times more per lookup, and
 * there is one lookup per name and per inode).
 */
class SlotTable {
  /** slot + 1 by inode number, 0 for none */
  private direct = new Int32Array(1 << 16);
  private keys = new Float64Array(1 << 12).fill(-1);
  private vals = new Int32Array(1 << 12);
  private bits = 12;
  /** inode number of each slot */
  readonly inos: number[] = [];

  slotOf(ino: number): number {
    if (ino < DIRECT_LIMIT) {
      if (ino >= this.direct.length) {
        let n = this.direct.length;
        while (n <= ino) n *= 2;
        const d = new Int32Array(Math.min(n, DIRECT_LIMIT));
        d.set(this.direct);
        this.direct = d;
      }
      const s = this.direct[ino]!;
      if (s !== 0) return s - 1;
      this.inos.push(ino);
      this.direct[ino] = this.inos.length;
      return this.inos.length - 1;
    }
    const mask = (1 << this.bits) - 1;
    let i = Math.imul((ino >>> 0) ^ Math.imul((ino / 4294967296) >>> 0, 0x85ebca6b), 0x9e3779b1) >>> (32 - this.bits);
    for (;;) {
      const k = this.keys[i]!;
      if (k === ino) return this.vals[i]!;
      if (k === -1) break;
      i = (i + 1) & mask;
    }
    const slot = this.inos.length;
    this.inos.push(ino);
    this.keys[i] = ino;
    this.vals[i] = slot;
    if (this.inos.length * 2 > mask) this.grow();
    return slot;
  }

  private grow(): void {
    const { keys, vals } = this;
    this.bits++;
    this.keys = new Float64Array(1 << this.bits).fill(-1);
    this.vals = new Int32Array(1 << this.bits);
    const mask = (1 << this.bits) - 1;
    for (let j = 0; j < keys.length; j++) {
      const ino = keys[j]!;
      if (ino === -1) continue;
      let i = Math.imul((ino >>> 0) ^ Math.imul((ino / 4294967296) >>> 0, 0x85ebca6b), 0x9e3779b1) >>> (32 - this.bits);
      while (this.keys[i] !== -1) i = (i + 1) & mask;
      this.keys[i] = ino;
      this.vals[i] = vals[j]!;
    }
  }
}

export class Screener {
  /** for every tree (snapshots share inode numbers) */
  private readonly table = new SlotTable();
  private readonly inos = this.table.inos;
  private readonly kept: Screen[] = [];

  constructor(private readonly ctx: CheckContext, private readonly scanner: LeafScanner) {}

  slotOf(ino: number): number {
    return this.table.slotOf(ino);
  }

  /**
   * Screens one tree: from a kept one when `order` (its leaves) shares
   * enough with one, else in full. Throws what reading the tree throws.
   */
  async screen(root: RootRecord, order: LeafPos[] | undefined): Promise<ScreenResult> {
    const rootDir = fromBig(root.item.root_dirid);
    const dataReloc = root.objectid === OBJ.DATA_RELOC_TREE;
    const s = (order && await this.byDifference(root, order, rootDir, dataReloc)) ?? await this.full(root, rootDir, dataReloc);
    const v = this.verdict(s, rootDir);
    if (v.sound && root.objectid !== OBJ.DATA_RELOC_TREE && root.objectid !== OBJ.TREE_RELOC) {
      this.kept.push(s);
      if (this.kept.length > KEEP_SCREENS) this.kept.shift();
    }
    return { ...v, subvol: s.subvol };
  }

  get keptAny(): boolean { return this.kept.length > 0; }

  private async full(root: RootRecord, rootDir: U64, dataReloc: boolean): Promise<Screen> {
    const s: Screen = { tree: root.objectid, leaves: new Map(), a: new Int32Array(Math.max(1024, this.inos.length) * FIELDS), subvol: [], odd: false };
    const sink = new ScreenSink(this, this.scanner, s, rootDir);
    const loc = { objectid: root.objectid, bytenr: root.item.bytenr, level: root.item.level, generation: root.item.generation };
    await forEachLeaf(this.ctx, loc, (leaf) => {
      s.leaves.set(addrKey(fromBig(leaf.bytenr)), { generation: leaf.generation, firstKey: leaf.nritems > 0 ? leaf.itemKeyAt(0) : undefined });
      this.scanner.scanLeaf(leaf, sink, dataReloc, undefined, true, false);
    });
    sink.finish();
    return s;
  }

  /** A snapshot from the kept screen it shares most leaves with; undefined when none shares half. */
  private async byDifference(root: RootRecord, order: LeafPos[], rootDir: U64, dataReloc: boolean): Promise<Screen | undefined> {
    let base: Screen | undefined;
    let shared = 0;
    for (const k of this.kept) {
      let n = 0;
      for (const l of order) if (k.leaves.has(l.key)) n++;
      if (n > shared) { shared = n; base = k; }
    }
    if (!base || shared < order.length * 0.5) return undefined;
    const leaves = new Map<AddrKey, LeafSeen>();
    // The pointer's expectation is already the pair kept: no object per leaf.
    for (const l of order) leaves.set(l.key, l.exp);
    const added = order.filter((l) => !base.leaves.has(l.key));
    const removed: AddrKey[] = [];
    for (const b of base.leaves.keys()) if (!leaves.has(b)) removed.push(b);
    const a = new Int32Array(Math.max(base.a.length, this.inos.length * FIELDS));
    a.set(base.a);
    const s: Screen = { tree: root.objectid, leaves, a, subvol: base.subvol.filter((e) => leaves.has(addrKey(fromBig(e.leaf)))), odd: false };
    const sink = new ScreenSink(this, this.scanner, s, rootDir);

    // Inodes whose own items lie in a leaf one tree has and the other has not; the names the old leaves gave taken away.
    const changed = new Set<U64>();
    const objectids = (leaf: TreeBlock) => {
      const d = leaf.buf;
      for (let slot = 0; slot < leaf.nritems; slot++) {
        const at = HEADER_SIZE + slot * ITEM_SIZE;
        const ino = readU64(d, at);
        if (ino !== FREE_SPACE_OBJECTID && d[at + 8] !== KEY.ORPHAN_ITEM) changed.add(ino);
      }
    };
    prefetch(this.ctx, [...added.map((l) => l.exp), ...removed.map((b) => ({ bytenr: keyAddr(b), level: 0 }))]);
    const addedBlocks = new Map<bigint, TreeBlock>();
    for (const l of added) {
      const b = await readBlock(this.ctx, l.exp);
      addedBlocks.set(l.bytenr, b);
      objectids(b);
    }
    for (const bytenr of removed) {
      const b = await readBlock(this.ctx, { bytenr: keyAddr(bytenr), level: 0 });
      objectids(b);
      sink.takeEntries(b);
    }
    // The shared leaves as this tree's pointers describe them: a pointer that disagrees with the
    // block (its generation) fails here as it would in a full walk. A pointer saying what the kept
    // tree's did was verified with it, and the block is not read again (on a filesystem larger
    // than the block cache that would be a second read of every leaf, per snapshot).
    for (const l of order) {
      if (addedBlocks.has(l.bytenr)) continue;
      const seen = base.leaves.get(l.key)!;
      if (seen.generation === l.exp.generation && seen.firstKey !== undefined && keyEquals(seen.firstKey, l.exp.firstKey)) continue;
      await readBlock(this.ctx, l.exp);
    }

    for (const ino of changed) sink.forget(ino);
    const sorted = sortU64(changed);
    const holds = (from: U64, to: U64 | undefined): boolean => {
      let lo = 0;
      let hi = sorted.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (sorted[mid]! < from) lo = mid + 1; else hi = mid; }
      return lo < sorted.length && (to === undefined || sorted[lo]! <= to);
    };
    for (let i = 0; i < order.length; i++) {
      const l = order[i]!;
      const b = addedBlocks.get(l.bytenr);
      if (b) { this.scanner.scanLeaf(b, sink, dataReloc, undefined, true, false); continue; }
      if (!holds(l.first, order[i + 1]?.first)) continue;
      this.scanner.scanLeaf(await readBlock(this.ctx, l.exp), sink, dataReloc, changed, false, false);
    }
    sink.finish();
    return s;
  }

  /** Whether every inode of the tree is sound, and how many inodes it has. */
  private verdict(s: Screen, rootDir: U64): { sound: boolean; inodes: number } {
    const a = s.a;
    const n = Math.min(this.inos.length, a.length / FIELDS);
    let inodes = 0;
    let sound = !s.odd;
    let rootSeen = false;
    const rootSlot = typeof rootDir === 'number' ? this.slotOf(rootDir) : -1;
    for (let i = 0, f = 0; i < n; i++, f += FIELDS) {
      const own = a[f + OWN]!;
      if (own === 0 && a[f + ITEM_N] === 0 && a[f + INDEX_N] === 0) continue;
      inodes++;
      if (!sound) continue;
      if (own !== SOUND) { sound = false; continue; }
      if (i === rootSlot) {
        // The root directory: no name but its own "..", checked when its items were read.
        rootSeen = true;
        if (a[f + ITEM_N] !== 0 || a[f + INDEX_N] !== 0) sound = false;
        continue;
      }
      const nlink = a[f + NLINK]!;
      if (a[f + ITEM_N] !== nlink || a[f + INDEX_N] !== nlink || a[f + REF_N] !== nlink
        || a[f + ITEM_A] !== a[f + REF_A] || a[f + ITEM_B] !== a[f + REF_B]
        || a[f + INDEX_A] !== a[f + REF_IA] || a[f + INDEX_B] !== a[f + REF_IB]) sound = false;
    }
    return { sound: sound && rootSeen, inodes };
  }
}

/** Items of one tree into its screen. Own items come in key order, so an inode is complete when the next begins. */
class ScreenSink implements ItemSink {
  private cur: Own | undefined;
  private curIno: U64 = -1;

  constructor(private readonly screener: Screener, private readonly scanner: LeafScanner, private readonly s: Screen, private readonly rootDir: U64) {}

  /** The record of slot `slot`, the screen's array grown to hold it. */
  private field(slot: number): number {
    const need = (slot + 1) * FIELDS;
    if (need > this.s.a.length) {
      const a = new Int32Array(Math.max(need, this.s.a.length * 2));
      a.set(this.s.a);
      this.s.a = a;
    }
    return slot * FIELDS;
  }

  own(ino: U64): Own {
    if (this.cur && ino === this.curIno) return this.cur;
    this.finish();
    this.curIno = ino;
    return this.cur = new Own(undefined);
  }

  /** Files the inode read last. */
  finish(): void {
    const o = this.cur;
    if (!o) return;
    this.cur = undefined;
    const ino = this.curIno;
    if (typeof ino !== 'number') { this.s.odd = true; return; }
    const f = this.field(this.screener.slotOf(ino));
    const a = this.s.a;
    let sound = o.found && !o.prealloc && !o.refOdd && o.nlink >= 1 && distinct(o.refHashes) && this.scanner.soundShape(o);
    if (sound && ino === this.rootDir) sound = o.nlink === 1 && o.refCount === 1;
    a[f + OWN] = sound ? SOUND : UNSOUND;
    a[f + NLINK] = o.nlink | 0;
    a[f + REF_N] = o.refCount;
    a[f + REF_A] = o.refA;
    a[f + REF_B] = o.refB;
    a[f + REF_IA] = o.refIA;
    a[f + REF_IB] = o.refIB;
  }

  /** Forgets what inode `ino`'s own items said (they are read again). */
  forget(ino: U64): void {
    if (typeof ino !== 'number') { this.s.odd = true; return; }
    const f = this.field(this.screener.slotOf(ino));
    this.s.a.fill(0, f + OWN, f + REF_IB + 1);
  }

  ref(o: Own, ino: U64, dir: U64, index: U64, d: Buffer, nameAt: number, nameEnd: number): void {
    const ft = FT_OF_MODE[o.mode & S_IFMT];
    if (typeof dir !== 'number' || typeof index !== 'number' || !o.found || ft === undefined) { o.refOdd = true; return; }
    if (ino === this.rootDir && !(index === 0 && nameEnd - nameAt === 2 && d[nameAt] === 0x2e && d[nameAt + 1] === 0x2e)) o.refOdd = true;
    hashName(d, nameAt, nameEnd);
    const h = itemPrint(laneA, dir, ft);
    if (o.refCount === 1) o.refHashes = [o.refA, h];
    else if (o.refCount > 1) o.refHashes!.push(h);
    o.refCount++;
    o.refA = (o.refA + h) | 0;
    o.refB = (o.refB + itemPrint(laneB, dir, ft)) | 0;
    o.refIA = (o.refIA + indexPrint(laneA, dir, index, ft)) | 0;
    o.refIB = (o.refIB + indexPrint(laneB, dir, index, ft)) | 0;
  }

  entry(target: U64, dir: U64, d: Buffer, nameAt: number, nameEnd: number, _nameLen: number, index: U64, ftype: number, isIndex: boolean): void {
    this.addEntry(target, dir, d, nameAt, nameEnd, index, ftype, isIndex, 1);
  }

  private addEntry(target: U64, dir: U64, d: Buffer, nameAt: number, nameEnd: number, index: U64, ftype: number, isIndex: boolean, sign: 1 | -1): void {
    if (typeof target !== 'number' || typeof dir !== 'number' || typeof index !== 'number') { this.s.odd = true; return; }
    hashName(d, nameAt, nameEnd);
    const f = this.field(this.screener.slotOf(target));
    const a = this.s.a;
    if (isIndex) {
      a[f + INDEX_N] += sign;
      a[f + INDEX_A] = (a[f + INDEX_A]! + sign * indexPrint(laneA, dir, index, ftype)) | 0;
      a[f + INDEX_B] = (a[f + INDEX_B]! + sign * indexPrint(laneB, dir, index, ftype)) | 0;
    } else {
      a[f + ITEM_N] += sign;
      a[f + ITEM_A] = (a[f + ITEM_A]! + sign * itemPrint(laneA, dir, ftype)) | 0;
      a[f + ITEM_B] = (a[f + ITEM_B]! + sign * itemPrint(laneB, dir, ftype)) | 0;
    }
  }

  /**
   * Takes away the names a leaf of the kept tree gave. That tree was sound,
   * so each of its entries counted (no unlinked directory, no hash mismatch).
   */
  takeEntries(leaf: TreeBlock): void {
    const d = leaf.buf;
    for (let slot = 0; slot < leaf.nritems; slot++) {
      const keyAt = HEADER_SIZE + slot * ITEM_SIZE;
      const type = d[keyAt + 8];
      if (type !== KEY.DIR_ITEM && type !== KEY.DIR_INDEX) continue;
      const dir = readU64(d, keyAt);
      if (dir === FREE_SPACE_OBJECTID) continue;
      const index = readU64(d, keyAt + 9);
      const at = leaf.itemStartAt(slot);
      const end = at + leaf.itemSizeAt(slot);
      for (let off = at; off + 30 <= end;) {
        const nameLen = d.readUInt16LE(off + 27);
        const nameAt = off + 30;
        if (d[off + 8] !== KEY.ROOT_ITEM) {
          this.addEntry(readU64(d, off), dir, d, nameAt, Math.min(end, nameAt + nameLen), index, d[off + 29]!, type === KEY.DIR_INDEX, -1);
        }
        off += 30 + nameLen + d.readUInt16LE(off + 25);
      }
    }
  }

  orphan(): void {}

  subvol(e: SubvolEntry & { leaf: bigint }): void { this.s.subvol.push(e); }
}

/** The values in ascending order: as doubles (a numeric typed-array sort, no comparator calls) unless one is a bigint. */
function sortU64(values: Set<U64>): ArrayLike<U64> {
  let numbers = true;
  for (const v of values) if (typeof v !== 'number') { numbers = false; break; }
  if (numbers) return Float64Array.from(values as Set<number>).sort();
  return [...values].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
}

/** No two of an inode's names are the same (parent, name): a duplicate would cancel out nowhere, but it is a finding. */
function distinct(hashes: number[] | undefined): boolean {
  if (!hashes) return true;
  if (hashes.length > 16) return new Set(hashes).size === hashes.length;
  for (let i = 1; i < hashes.length; i++) for (let j = 0; j < i; j++) if (hashes[i] === hashes[j]) return false;
  return true;
}
