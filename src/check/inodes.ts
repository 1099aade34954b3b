/**
 * Each subvolume's inodes agree with their names, as btrfs check's original
 * mode sees it. Every name an inode has is one backref, keyed by (parent
 * directory, name), that must be found three times: as the DIR_ITEM (by
 * name hash) and DIR_INDEX (by index) in the parent, and as the inode's own
 * INODE_REF/INODE_EXTREF, with the same index and a file type matching the
 * inode's mode. An inode's nlink is the number of DIR_ITEMs naming it; a
 * directory's isize is the bytes of the names it holds (each counted once as
 * DIR_ITEM, once as DIR_INDEX); a file's nbytes is what its file extents
 * occupy, and (before NO_HOLES) its extents cover it without gaps; written
 * extents have checksums unless the inode is NODATASUM, and preallocated
 * ones have none until written. The root directory is named only by its
 * ".." self-reference. An inode nobody names needs an orphan item.
 *
 * What is known of an inode comes from two places: its own items (keyed by
 * its number) and the directory entries naming it (keyed by its parents).
 * Both are kept per tree, with the leaf each entry came from, so that a
 * snapshot, which shares most leaves with a tree already checked, is checked
 * by redoing only the inodes its differing leaves touch (see checkDelta).
 *
 * Subvolume entries (dir items pointing at a ROOT_ITEM) are handed to the
 * root refs pass instead.
 */
import {
  FEATURE_INCOMPAT, FILE_EXTENT, FT, HEADER_SIZE, ITEM_SIZE, KEY, OBJ, S_IFDIR, S_IFMT, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK,
} from '../format/constants.js';
import { compareKeys, type Key } from '../format/key.js';
import type { TreeBlock } from '../format/tree-block.js';
import { nameHash } from '../util/checksum.js';
import { BtrfsError } from '../util/errors.js';
import type { BlockExpectation } from '../verify/tree-checker.js';
import type { CheckContext, RootRecord } from './context.js';
import { csumBytesIn } from './csums.js';
import { childExps, forEachLeaf, prefetch, readBlock } from './walk.js';
import { addU64, fromBig, readU64, toBig, type U64 } from './u64.js';

const NONE = -1;

/** A name as the inode's own INODE_REF/INODE_EXTREF records it; an INODE_REF's key, (inode, INODE_REF, dir), is rebuilt when needed. */
interface OwnRef { dir: U64; name: string; index: U64; key: Key | undefined }

/**
 * A directory entry naming an inode: a DIR_ITEM or DIR_INDEX of its parent, and the leaf it lies in.
 * Its item key is (dir, DIR_ITEM or DIR_INDEX, index) and is rebuilt when a finding needs it:
 * there are several entries per inode, kept for every tree.
 */
interface Entry { dir: U64; name: string; nameLen: number; index: U64; ftype: number; isIndex: boolean; leaf: bigint }

const entryKey = (e: Entry): Key => ({ objectid: toBig(e.dir), type: e.isIndex ? KEY.DIR_INDEX : KEY.DIR_ITEM, offset: toBig(e.index) });

/** The smallest key among entries (not empty), so that findings do not depend on the order the entries were gathered in. */
function firstEntryKey(entries: Entry[]): Key {
  let best = entryKey(entries[0]!);
  for (let i = 1; i < entries.length; i++) {
    const k = entryKey(entries[i]!);
    if (compareKeys(k, best) < 0) best = k;
  }
  return best;
}

/** A finding about one inode, without the tree's name (so a snapshot can reuse it): code, text, key. */
type Note = [code: string, text: string, key: Key];

/** What an inode's own items say. */
class Own {
  found = false;
  nlink = 0;
  isize: U64 = 0;
  nbytes: U64 = 0;
  mode = 0;
  nodatasum = false;
  itemKey: Key | undefined;
  refs: OwnRef[] | undefined;
  /** it holds directory entries */
  foundDirItem = false;
  /** it holds entries but has nlink 0: they are ignored, which makes its children depend on its own items */
  zeroDir = false;
  foundFileExtent = false;
  /** name bytes of its entries (directories), bytes of its extents (files) */
  foundSize: U64 = 0;
  extentStart: U64 = NONE;
  extentEnd: U64 = NONE;
  firstGap: U64 = NONE;
  foundCsumItem = false;
  someCsumMissing = false;
  errors: [code: string, text: string][] | undefined;
  /** preallocated extents with checksums in their range: judged once every tree is known */
  prealloc: { key: Key; start: U64; len: U64 }[] | undefined;

  constructor(readonly firstKey: Key) {}

  error(text: string, code = 'inode'): void {
    (this.errors ??= []).push([code, text]);
  }
}

/** A directory entry naming a subvolume: (tree holding the entry, subvolume id, dir, name, index). */
export interface SubvolEntry { tree: bigint; child: bigint; dir: bigint; name: Buffer; index?: bigint; kind: 'item' | 'index'; key: Key }

/** Everything the inode pass knows of one tree, kept so a snapshot of it can be checked by difference. */
interface TreeState {
  tree: bigint;
  leaves: Set<bigint>;
  own: Map<U64, Own>;
  incoming: Map<U64, Entry[]>;
  orphans: Set<U64>;
  /** inodes with findings, and their findings */
  notes: Map<U64, Note[]>;
  /** inodes with preallocated extents that have checksums */
  preallocInos: Set<U64>;
  subvol: (SubvolEntry & { leaf: bigint })[];
}

const FREE_INO = fromBig(OBJ.FREE_INO);
const FREE_SPACE_OBJECTID = fromBig(OBJ.FREE_SPACE);
const ORPHAN_OBJECTID = fromBig(OBJ.ORPHAN);

const FT_OF_MODE: Record<number, number> = {
  [S_IFREG]: FT.REG_FILE, [S_IFDIR]: FT.DIR, [S_IFCHR]: FT.CHRDEV, [S_IFBLK]: FT.BLKDEV,
  [S_IFIFO]: FT.FIFO, [S_IFSOCK]: FT.SOCK, [S_IFLNK]: FT.SYMLINK,
};

// Inode flags as two 32-bit words. The kernel defines bits 0-11 and 31 of the low word and
// bit 0 (VERITY) of the high one; its tree-checker refuses others.
const FLAG_NODATASUM = 1;
const FLAG_IMMUTABLE = 1 << 6;
const FLAG_APPEND = 1 << 7;
const KNOWN_LO = 0xfff | 0x80000000;
const KNOWN_HI = 1;

/** Trees that hold inodes: the top level, subvolumes and snapshots, and both relocation trees. */
export function isFsTree(objectid: bigint): boolean {
  return objectid === OBJ.FS_TREE || objectid === OBJ.DATA_RELOC_TREE || objectid === OBJ.TREE_RELOC
    || (objectid >= OBJ.FIRST_FREE && objectid <= OBJ.LAST_FREE);
}

/** Names as btrfs check prints them: bytes as they are. */
const printable = (latin1: string) => Buffer.from(latin1, 'latin1').toString('utf8');

export interface InodeOptions {
  /** check a snapshot by its difference from a tree already checked (default true) */
  incremental?: boolean;
}

/** A preallocated range with checksums, found in a tree's file. */
export interface PreallocCsum { tree: bigint; ino: U64; key: Key; start: U64; len: U64 }

/**
 * Checksums over unwritten space are only possible if another file wrote
 * this very extent. btrfs check looks the range up as an extent of its own
 * and then for a written (regular) reference to it; anything else is an
 * odd csum item.
 */
export function judgePrealloc(ctx: CheckContext, list: PreallocCsum[], written: Set<U64>): void {
  for (const p of list) {
    const e = ctx.extents.get(toBig(p.start));
    const where = { tree: p.tree, key: p.key, inode: toBig(p.ino) };
    if (!e || e.metadata || e.numBytes !== toBig(p.len)) {
      ctx.report.error('odd-csum-item', `root ${p.tree} inode ${p.ino} errors: odd csum item (preallocated range [${p.start} ${p.len}] has checksums and is not an extent of its own)`, where);
    } else if (!written.has(p.start)) {
      ctx.report.error('odd-csum-item', `root ${p.tree} inode ${p.ino} errors: odd csum item (preallocated extent ${p.start} has checksums but was never written)`, where);
    }
  }
}

/** Trees kept for snapshots to be compared with; each costs memory in proportion to its inodes. */
const KEEP_TREES = 4;

/**
 * Checks every fs tree. Subvolume entries found in directories are passed
 * to `onSubvolEntry` for the root refs pass.
 */
export async function checkInodes(ctx: CheckContext, onSubvolEntry: (e: SubvolEntry) => void, opts: InodeOptions = {}): Promise<void> {
  const r = await inodePass(ctx, onSubvolEntry, opts);
  judgePrealloc(ctx, r.prealloc, r.written);
}

/**
 * The pass itself, without what needs the extent tree: the preallocated
 * ranges with checksums and the written extents, for judgePrealloc. (A
 * worker thread runs this part while the main one walks the trees.)
 */
export async function inodePass(ctx: CheckContext, onSubvolEntry: (e: SubvolEntry) => void, opts: InodeOptions = {}): Promise<{ prealloc: PreallocCsum[]; written: Set<U64> }> {
  const pass = new InodePass(ctx, onSubvolEntry, opts.incremental ?? true);
  const trees = ctx.roots.filter((r) => isFsTree(r.objectid) && !r.partiallyDropped);
  for (let i = 0; i < trees.length; i++) {
    ctx.onProgress?.(`inodes of root ${trees[i]!.objectid}`, i / trees.length);
    await pass.checkTree(trees[i]!);
  }
  return { prealloc: pass.preallocCsums, written: pass.writtenExtents };
}

class InodePass {
  readonly writtenExtents = new Set<U64>();
  readonly preallocCsums: PreallocCsum[] = [];
  private readonly kept: TreeState[] = [];
  private readonly noHoles: boolean;
  private readonly ss: number;
  /** What one inline extent may hold: less than a sector, and less than a leaf item. */
  private readonly maxInline: number;
  private readonly superGen: bigint;
  private readonly superGenLimit: U64;

  constructor(private readonly ctx: CheckContext, private readonly onSubvolEntry: (e: SubvolEntry) => void, private readonly incremental: boolean) {
    const info = ctx.info;
    this.noHoles = (info.sb.incompat_flags & FEATURE_INCOMPAT.NO_HOLES) !== 0n;
    this.ss = info.sectorsize;
    this.maxInline = Math.min(info.sectorsize - 1, info.nodesize - 101 - 25 - 21);
    this.superGen = info.sb.generation;
    this.superGenLimit = fromBig(info.sb.generation + 1n);
  }

  async checkTree(root: RootRecord): Promise<void> {
    const { report } = this.ctx;
    const tree = root.objectid;
    if (root.item.generation > this.superGen + 1n) {
      report.error('root-generation', `invalid generation for root ${tree}, have ${root.item.generation} expect (0, ${this.superGenLimit}]`,
        { tree: OBJ.ROOT_TREE, key: { objectid: tree, type: KEY.ROOT_ITEM, offset: root.offset } });
    }
    // A subvolume whose last name is gone is being deleted: its inodes no longer count.
    if (root.item.refs === 0) return;
    const loc = { objectid: tree, bytenr: root.item.bytenr, level: root.item.level, generation: root.item.generation };
    let state: TreeState | undefined;
    try {
      if (this.incremental && this.kept.length) {
        const order = await leafOrder(this.ctx, loc);
        state = await this.checkDelta(root, order);
      }
      state ??= await this.checkFull(root);
    } catch (e) {
      if (!(e instanceof BtrfsError)) throw e;
      report.fromError(e, 'fs-tree-unreadable', { tree });
      return;
    }
    this.emit(root, state);
    if (this.incremental && tree !== OBJ.DATA_RELOC_TREE && tree !== OBJ.TREE_RELOC) {
      this.kept.push(state);
      if (this.kept.length > KEEP_TREES) this.kept.shift();
    }
  }

  /** Reports a tree's findings (kept or new alike) under its own name. */
  private emit(root: RootRecord, s: TreeState): void {
    const { report } = this.ctx;
    const tree = root.objectid;
    const label = tree === OBJ.TREE_RELOC ? `reloc root ${root.offset}` : `root ${tree}`;
    let n = s.own.size;
    s.incoming.forEach((_, ino) => { if (!s.own.has(ino)) n++; });
    report.stats.inodes += n;
    const rootDir = fromBig(root.item.root_dirid);
    for (const [ino, notes] of s.notes) {
      for (const [code, text, key] of notes) report.error(code, `${label} inode ${ino} errors: ${text}`, { tree, key, inode: toBig(ino) });
    }
    for (const [code, text, key] of this.evaluateRootDir(s.own.get(rootDir), s.incoming.get(rootDir))) {
      report.error(code, `${label} inode ${rootDir} errors: ${text}`, { tree, key, inode: toBig(rootDir) });
    }
    if (!s.own.has(rootDir) && !s.incoming.has(rootDir)) {
      report.error('no-root-dir', `${label} root dir ${rootDir} not found`, { tree, inode: toBig(rootDir) });
    }
    for (const ino of s.preallocInos) {
      for (const p of s.own.get(ino)?.prealloc ?? []) this.preallocCsums.push({ tree, ino, key: p.key, start: p.start, len: p.len });
    }
    for (const e of s.subvol) this.onSubvolEntry({ ...e, tree });
  }

  private async checkFull(root: RootRecord): Promise<TreeState> {
    const tree = root.objectid;
    const s: TreeState = {
      tree, leaves: new Set(), own: new Map(), incoming: new Map(), orphans: new Set(), notes: new Map(), preallocInos: new Set(), subvol: [],
    };
    const loc = { objectid: tree, bytenr: root.item.bytenr, level: root.item.level, generation: root.item.generation };
    const dataReloc = tree === OBJ.DATA_RELOC_TREE;
    await forEachLeaf(this.ctx, loc, (leaf) => {
      s.leaves.add(leaf.bytenr);
      this.scanLeaf(leaf, s, dataReloc, undefined, true);
    });
    const rootDir = fromBig(root.item.root_dirid);
    // forEach rather than for-of: no [key, value] pair per inode.
    s.own.forEach((own, ino) => {
      if (own.prealloc) s.preallocInos.add(ino);
      if (ino === rootDir) return;
      const notes = this.evaluate(ino, own, s.incoming.get(ino), s.orphans);
      if (notes) s.notes.set(ino, notes);
    });
    s.incoming.forEach((entries, ino) => {
      if (s.own.has(ino) || ino === rootDir) return;
      const notes = this.evaluate(ino, undefined, entries, s.orphans);
      if (notes) s.notes.set(ino, notes);
    });
    return s;
  }

  /**
   * A tree checked by its difference from the kept tree it shares most
   * leaves with: the inodes whose own items, naming entries or orphan item
   * lie in a leaf one tree has and the other has not are evaluated again;
   * every other inode is as it was. Undefined when no kept tree is close
   * enough (or a case arises this cannot follow), to check it in full.
   */
  private async checkDelta(root: RootRecord, order: LeafPos[]): Promise<TreeState | undefined> {
    const tree = root.objectid;
    let base: TreeState | undefined;
    let shared = 0;
    for (const k of this.kept) {
      let n = 0;
      for (const l of order) if (k.leaves.has(l.bytenr)) n++;
      if (n > shared) { shared = n; base = k; }
    }
    if (!base || shared < order.length * 0.5) return undefined;
    const leaves = new Set(order.map((l) => l.bytenr));
    const added = order.filter((l) => !base.leaves.has(l.bytenr));
    const removed = [...base.leaves].filter((b) => !leaves.has(b));
    const dataReloc = tree === OBJ.DATA_RELOC_TREE;

    // What the differing leaves touch.
    const ownChanged = new Set<U64>();
    const incomingChanged = new Set<U64>();
    const orphanChanged = new Set<U64>();
    const touch = (leaf: TreeBlock) => {
      const d = leaf.buf;
      for (let slot = 0; slot < leaf.nritems; slot++) {
        const at = HEADER_SIZE + slot * ITEM_SIZE;
        const type = d[at + 8]!;
        const objectid = readU64(d, at);
        if (type === KEY.ORPHAN_ITEM) { if (objectid === ORPHAN_OBJECTID) orphanChanged.add(readU64(d, at + 9)); continue; }
        if (objectid === FREE_SPACE_OBJECTID) continue;
        ownChanged.add(objectid);
        if (type === KEY.DIR_ITEM || type === KEY.DIR_INDEX) {
          const end = leaf.itemStartAt(slot) + leaf.itemSizeAt(slot);
          for (let off = leaf.itemStartAt(slot); off + 30 <= end; off += 30 + d.readUInt16LE(off + 27) + d.readUInt16LE(off + 25)) {
            if (d[off + 8] !== KEY.ROOT_ITEM) incomingChanged.add(readU64(d, off));
          }
        }
      }
    };
    const read = (bytenr: bigint) => readBlock(this.ctx, { bytenr, level: 0 });
    const addedBlocks = new Map<bigint, TreeBlock>();
    prefetch(this.ctx, [...added.map((l) => l.exp), ...removed.map((bytenr) => ({ bytenr, level: 0 }))]);
    for (const l of added) {
      const b = await readBlock(this.ctx, l.exp);
      addedBlocks.set(l.bytenr, b);
      touch(b);
    }
    for (const bytenr of removed) touch(await read(bytenr));
    // The shared leaves as this tree's pointers describe them: a pointer that disagrees with the
    // block (its generation) fails here as it would in a full walk.
    for (const l of order) if (!addedBlocks.has(l.bytenr)) await readBlock(this.ctx, l.exp);

    // Leaves to scan again, in tree order: the new ones in full, and any other holding items of a changed inode.
    const changed = [...ownChanged].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const holds = (from: U64, to: U64 | undefined): boolean => {
      let lo = 0;
      let hi = changed.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (changed[mid]! < from) lo = mid + 1; else hi = mid; }
      return lo < changed.length && (to === undefined || changed[lo]! <= to);
    };
    const s: TreeState = {
      tree, leaves, own: copyMap(base.own), incoming: copyMap(base.incoming), orphans: new Set(base.orphans), notes: copyMap(base.notes),
      preallocInos: new Set(base.preallocInos), subvol: base.subvol.filter((e) => leaves.has(e.leaf)),
    };
    for (const x of ownChanged) s.own.delete(x);
    const fresh: TreeState = { ...s, own: s.own, incoming: new Map(), orphans: new Set(), subvol: [] };
    for (let i = 0; i < order.length; i++) {
      const l = order[i]!;
      const b = addedBlocks.get(l.bytenr);
      if (b) { this.scanLeaf(b, fresh, dataReloc, undefined, true); continue; }
      if (!holds(l.first, order[i + 1]?.first)) continue;
      this.scanLeaf(await readBlock(this.ctx, l.exp), fresh, dataReloc, ownChanged, false);
    }
    // An unlinked directory's entries do not count: if one is involved, its children's entries cannot be reused.
    for (const x of ownChanged) {
      if (base.own.get(x)?.zeroDir || s.own.get(x)?.zeroDir) return undefined;
    }
    // Orphan items and naming entries: the kept ones from leaves still shared, plus the new ones.
    const removedSet = new Set(removed);
    for (const x of orphanChanged) s.orphans.delete(x);
    for (const x of fresh.orphans) s.orphans.add(x);
    for (const y of incomingChanged) {
      const kept = (base.incoming.get(y) ?? []).filter((e) => !removedSet.has(e.leaf));
      const more = fresh.incoming.get(y);
      const all = more ? kept.concat(more) : kept;
      if (all.length) s.incoming.set(y, all); else s.incoming.delete(y);
    }
    s.subvol.push(...fresh.subvol);
    const rootDir = fromBig(root.item.root_dirid);
    const affected = new Set<U64>([...ownChanged, ...incomingChanged, ...orphanChanged, ...fresh.incoming.keys()]);
    for (const y of affected) {
      s.preallocInos.delete(y);
      if (s.own.get(y)?.prealloc) s.preallocInos.add(y);
      s.notes.delete(y);
      if (y === rootDir) continue;
      const own = s.own.get(y);
      const entries = s.incoming.get(y);
      if (!own && !entries) continue;
      const notes = this.evaluate(y, own, entries, s.orphans);
      if (notes) s.notes.set(y, notes);
    }
    return s;
  }

  /**
   * Reads one leaf's items into `s`. `only` limits own items to those
   * inodes (a leaf scanned again for a changed inode's items); `entries`
   * says whether its directory entries and orphan items count as new.
   */
  private scanLeaf(leaf: TreeBlock, s: TreeState, dataReloc: boolean, only: Set<U64> | undefined, entries: boolean): void {
    let cur: Own | undefined;
    let curIno: U64 = NONE;
    const d = leaf.buf;
    // Keys are read in place, and decoded only for the items kept: a rescan skips most of a leaf.
    for (let slot = 0; slot < leaf.nritems; slot++) {
      const at = HEADER_SIZE + slot * ITEM_SIZE;
      const ino = readU64(d, at);
      if (ino === FREE_SPACE_OBJECTID) continue;
      if (d[at + 8] === KEY.ORPHAN_ITEM) {
        if (entries && ino === ORPHAN_OBJECTID) s.orphans.add(readU64(d, at + 9));
        continue;
      }
      if (only && !only.has(ino)) continue;
      // The key as an object only where one is kept (most items need none).
      let k: Key | undefined;
      if (ino !== curIno || !cur) {
        curIno = ino;
        cur = s.own.get(ino);
        if (!cur) s.own.set(ino, cur = new Own(k = leaf.itemKeyAt(slot)));
      }
      this.ownItem(cur, ino, slot, k, d, leaf.itemStartAt(slot), leaf.itemSizeAt(slot), leaf, s, dataReloc, entries);
    }
  }

  /** One item of inode `ino`: slot `slot` of `leaf`, whose key object `k` is passed when it was already made. */
  private ownItem(o: Own, ino: U64, slot: number, k: Key | undefined, d: Buffer, at: number, size: number, leaf: TreeBlock, s: TreeState, dataReloc: boolean, entries: boolean): void {
    // `d` is the whole leaf; the item is [at, at + size).
    const end = at + size;
    const keyAt = HEADER_SIZE + slot * ITEM_SIZE;
    const type = d[keyAt + 8]!;
    switch (type) {
      case KEY.INODE_ITEM: {
        if (o.found) { o.error('dup inode item'); break; }
        o.found = true;
        o.itemKey = k ?? leaf.itemKeyAt(slot);
        o.isize = readU64(d, at + 16);
        o.nbytes = readU64(d, at + 24);
        o.nlink = d.readUInt32LE(at + 40);
        o.mode = d.readUInt32LE(at + 52);
        const lo = d.readUInt32LE(at + 64);
        const hi = d.readUInt32LE(at + 68);
        o.nodatasum = (lo & FLAG_NODATASUM) !== 0;
        const fmt = o.mode & S_IFMT;
        if (fmt === S_IFLNK && (lo & (FLAG_IMMUTABLE | FLAG_APPEND)) !== 0) {
          o.error(`odd inode flags 0x${d.readBigUInt64LE(at + 64).toString(16)} (immutable/append on a symlink)`, 'odd-inode-flags');
        } else if ((lo & ~KNOWN_LO) !== 0 || (hi & ~KNOWN_HI) !== 0) {
          o.error(`odd inode flags 0x${d.readBigUInt64LE(at + 64).toString(16)}`, 'odd-inode-flags');
        }
        if (fmt === S_IFDIR && o.nlink >= 2) o.error(`directory has invalid nlink ${o.nlink}`, 'dir-nlink');
        const gen = readU64(d, at + 0);
        const transid = readU64(d, at + 8);
        if (gen > this.superGenLimit || transid > this.superGenLimit) {
          o.error(`invalid inode generation or transid (generation ${gen}, transid ${transid}, super ${this.superGen})`, 'inode-generation');
        }
        if (d.readUInt32LE(keyAt + 9) !== 0 || d.readUInt32LE(keyAt + 13) !== 0) o.error(`inode item key offset ${d.readBigUInt64LE(keyAt + 9)}, expect 0`);
        break;
      }
      case KEY.INODE_REF: {
        const parent = readU64(d, keyAt + 9);
        for (let off = at; off + 10 <= end;) {
          const len = d.readUInt16LE(off + 8);
          (o.refs ??= []).push({ dir: parent, index: readU64(d, off), name: d.toString('latin1', off + 10, Math.min(end, off + 10 + len)), key: undefined });
          off += 10 + len;
        }
        break;
      }
      case KEY.INODE_EXTREF: {
        for (let off = at; off + 18 <= end;) {
          const len = d.readUInt16LE(off + 16);
          (o.refs ??= []).push({ dir: readU64(d, off), index: readU64(d, off + 8), name: d.toString('latin1', off + 18, Math.min(end, off + 18 + len)), key: k ??= leaf.itemKeyAt(slot) });
          off += 18 + len;
        }
        break;
      }
      case KEY.XATTR_ITEM: {
        for (let off = at; off + 30 <= end;) {
          const nameLen = d.readUInt16LE(off + 27);
          if (nameLen > 255) o.error(`invalid xattr (name of ${nameLen} bytes)`);
          off += 30 + nameLen + d.readUInt16LE(off + 25);
        }
        break;
      }
      case KEY.DIR_ITEM:
      case KEY.DIR_INDEX:
        this.dirEntries(o, ino, slot, d, at, end, leaf, s, entries);
        break;
      case KEY.EXTENT_DATA:
        this.fileExtent(o, leaf, slot, readU64(d, keyAt + 9), d, at, size, dataReloc);
        break;
      default:
        break;
    }
  }

  private dirEntries(o: Own, ino: U64, slot: number, d: Buffer, at: number, end: number, leaf: TreeBlock, s: TreeState, entries: boolean): void {
    o.foundDirItem = true;
    // An unlinked directory's entries are leftovers its orphan cleanup will remove.
    if (o.found && o.nlink === 0) { o.zeroDir = true; return; }
    const keyAt = HEADER_SIZE + slot * ITEM_SIZE;
    const isIndex = d[keyAt + 8] === KEY.DIR_INDEX;
    const keyOffset = readU64(d, keyAt + 9);
    let n = 0;
    for (let off = at; off + 30 <= end;) {
      n++;
      const locType = d[off + 8]!;
      const dataLen = d.readUInt16LE(off + 25);
      const nameLen = d.readUInt16LE(off + 27);
      const ftype = d[off + 29]!;
      const nameAt = off + 30;
      const nameEnd = Math.min(end, nameAt + nameLen);
      o.foundSize = addU64(o.foundSize, nameLen);
      const entryAt = off;
      off += 30 + nameLen + dataLen;
      if (!isIndex) {
        const h = nameHash(d.subarray(nameAt, nameEnd));
        if (fromBig(h) !== keyOffset) {
          o.error(`dir item name "${printable(d.toString('latin1', nameAt, nameEnd))}" hash mismatch, wanted 0x${h.toString(16).padStart(8, '0')} has 0x${toBig(keyOffset).toString(16).padStart(8, '0')}`, 'name-hash');
          continue;
        }
      }
      if (!entries) continue;
      if (locType === KEY.ROOT_ITEM) {
        const k = leaf.itemKeyAt(slot);
        s.subvol.push({
          tree: s.tree, child: d.readBigUInt64LE(entryAt), dir: k.objectid, name: Buffer.from(d.subarray(nameAt, nameEnd)),
          index: isIndex ? k.offset : undefined, kind: isIndex ? 'index' : 'item', key: k, leaf: leaf.bytenr,
        });
        continue;
      }
      const target = readU64(d, entryAt);
      const e: Entry = { dir: ino, name: d.toString('latin1', nameAt, nameEnd), nameLen, index: keyOffset, ftype, isIndex, leaf: leaf.bytenr };
      const list = s.incoming.get(target);
      if (list) list.push(e); else s.incoming.set(target, [e]);
    }
    if (isIndex && n > 1) o.error('dup dir index');
  }

  /** One EXTENT_DATA item: its shape, its place among the inode's extents, its bytes and checksums. */
  private fileExtent(o: Own, leaf: TreeBlock, slot: number, off: U64, d: Buffer, at: number, size: number, dataReloc: boolean): void {
    const leafOwner = leaf.owner;
    const ss = this.ss;
    o.foundFileExtent = true;
    if (o.extentStart === NONE) { o.extentStart = off; o.extentEnd = off; }
    if (o.extentEnd > off) o.error(`file extent overlap at offset ${off}`, 'extent-overlap');
    else if (o.extentEnd < off && o.firstGap === NONE) o.firstGap = o.extentEnd;
    const type = d[at + 20]!;
    const compression = d[at + 16]!;
    const ramBytes = readU64(d, at + 8);
    let numBytes: U64 = 0;
    let diskBytenr: U64 = 0;
    let extentOffset: U64 = 0;
    if (type === FILE_EXTENT.INLINE) {
      numBytes = ramBytes;
      if (numBytes === 0) o.error('bad file extent (inline extent of 0 bytes)', 'bad-file-extent');
      const stored = size - 21;
      if (compression) {
        if (stored > this.maxInline || numBytes > ss) o.error('inline file extent too large');
      } else {
        if (numBytes > this.maxInline) o.error('inline file extent too large');
        if (stored !== numBytes) o.error(`invalid inline ram bytes, have ${numBytes} expect ${stored}`, 'inline-ram-bytes');
      }
      o.foundSize = addU64(o.foundSize, numBytes);
      numBytes = typeof numBytes === 'number' ? Math.ceil(numBytes / ss) * ss : fromBig((numBytes + BigInt(ss - 1)) / BigInt(ss) * BigInt(ss));
    } else if (type === FILE_EXTENT.REG || type === FILE_EXTENT.PREALLOC) {
      if (size < 53) { o.error('bad file extent (item too short)', 'bad-file-extent'); return; }
      numBytes = readU64(d, at + 45);
      diskBytenr = readU64(d, at + 21);
      extentOffset = readU64(d, at + 37);
      if (numBytes === 0 || (typeof numBytes === 'number' ? numBytes % ss !== 0 : numBytes % BigInt(ss) !== 0n)) o.error(`bad file extent (num_bytes ${numBytes})`, 'bad-file-extent');
      // Both are u64s in btrfs check: their sum may wrap.
      if (addU64(numBytes, extentOffset) > ramBytes) o.error(`bad file extent (offset ${extentOffset} + num_bytes ${numBytes} past ram_bytes ${ramBytes})`, 'bad-file-extent');
      if (type === FILE_EXTENT.PREALLOC && (compression || d[at + 17] || d.readUInt16LE(at + 18))) o.error('bad file extent (encoded preallocated extent)', 'bad-file-extent');
      if (compression && o.nodatasum) o.error('bad file extent (compressed extent in a NODATASUM inode)', 'bad-file-extent');
      if (diskBytenr !== 0) o.foundSize = addU64(o.foundSize, numBytes);
    } else {
      o.error(`bad file extent (type ${type})`, 'bad-file-extent');
    }
    o.extentEnd = addU64(off, numBytes);
    // The data relocation tree copies extents whatever their checksums: nothing to demand of it.
    if (diskBytenr === 0 || leafOwner === OBJ.DATA_RELOC_TREE || dataReloc) return;
    if (type === FILE_EXTENT.REG) this.writtenExtents.add(diskBytenr);
    let start = diskBytenr;
    let len = numBytes;
    if (compression) len = readU64(d, at + 29);
    else start = addU64(diskBytenr, extentOffset);
    const found = csumBytesIn(this.ctx, start, len);
    if (type === FILE_EXTENT.REG) {
      if (found > 0) o.foundCsumItem = true;
      if (found < len) {
        o.someCsumMissing = true;
        if (compression) o.error('some csum missing (compressed extent)', 'csum-missing');
      }
    } else if (type === FILE_EXTENT.PREALLOC && found > 0) {
      (o.prealloc ??= []).push({ key: leaf.itemKeyAt(slot), start, len });
    }
  }

  /** The findings for one inode from its own items and the entries naming it, or undefined when it is sound. */
  private evaluate(ino: U64, own: Own | undefined, entries: Entry[] | undefined, orphans: Set<U64>): Note[] | undefined {
    const filetype = own?.found ? FT_OF_MODE[own.mode & S_IFMT] : undefined;
    // The common case, decided without building anything: one name, found three times, nothing odd.
    if (own && own.found && !own.errors && entries?.length === 2 && own.refs?.length === 1 && own.nlink === 1 && ino !== FREE_INO) {
      const r = own.refs[0]!;
      const [a, b] = entries as [Entry, Entry];
      const item = a.isIndex ? b : a;
      const index = a.isIndex ? a : b;
      if (item !== index && !item.isIndex && index.isIndex && item.dir === r.dir && index.dir === r.dir && item.name === r.name && index.name === r.name
        && index.index === r.index && item.ftype === filetype && index.ftype === filetype && item.nameLen <= 255 && this.soundShape(own)) {
        return undefined;
      }
    }
    return this.evaluateSlow(ino, own, entries ?? [], orphans, filetype);
  }

  /** No finding from the inode's own items alone (given it has exactly one name). */
  private soundShape(o: Own): boolean {
    const type = o.mode & S_IFMT;
    if (FT_OF_MODE[type] === undefined || (o.mode & ~(S_IFMT | 0o7777)) !== 0) return false;
    if (type === S_IFDIR) return o.foundSize === o.isize && !o.foundFileExtent;
    if (type === S_IFREG || type === S_IFLNK) {
      return !o.foundDirItem && o.foundSize === o.nbytes && this.noHoles && !(o.foundCsumItem && o.nodatasum) && !(o.someCsumMissing && !o.nodatasum);
    }
    return true;
  }

  /** The findings that depend on the inode's own items only. */
  private shapeErrors(o: Own): Note[] {
    const key = o.itemKey ?? o.firstKey;
    const notes: Note[] = o.errors ? o.errors.map(([code, text]) => [code, text, key] as Note) : [];
    if (!o.found) return notes;
    const add = (code: string, text: string) => notes.push([code, text, key]);
    const type = o.mode & S_IFMT;
    if (FT_OF_MODE[type] === undefined || (o.mode & ~(S_IFMT | 0o7777)) !== 0) add('inode', `invalid inode mode bit 0${(o.mode & ~0o7777).toString(8)}`);
    if (type === S_IFDIR) {
      if (o.foundSize !== o.isize) add('dir-isize', `dir isize wrong, have ${o.isize} expect ${o.foundSize}`);
      if (o.foundFileExtent) add('inode', 'odd file extent');
    } else if (type === S_IFREG || type === S_IFLNK) {
      if (o.foundDirItem) add('inode', 'odd dir item (a non-directory holds directory entries)');
      // An unlinked inode is half truncated until its orphan cleanup: its nbytes and extents are in flux.
      if (o.nlink > 0 && o.foundSize !== o.nbytes) add('nbytes', `nbytes wrong, have ${o.nbytes} expect ${o.foundSize}`);
      if (o.nlink > 0 && !this.noHoles && o.isize !== 0
        && (o.extentEnd === NONE || o.extentEnd < o.isize || o.extentStart !== 0 || (o.firstGap !== NONE && o.firstGap < o.isize))) {
        const s = o.extentStart === NONE ? 0 : o.extentStart;
        const e = o.extentEnd === NONE ? 0 : o.extentEnd;
        add('file-extent-discount', `file extent discount, size ${o.isize} but extents cover [${s}, ${e}) with a hole`);
      }
      if (o.foundCsumItem && o.nodatasum) add('inode', 'odd csum item (checksums for a NODATASUM inode)');
      if (o.someCsumMissing && !o.nodatasum) add('csum-missing', 'some csum missing');
    }
    return notes;
  }

  private evaluateSlow(ino: U64, own: Own | undefined, entries: Entry[], orphans: Set<U64>, filetype: number | undefined): Note[] | undefined {
    interface Ref { dir: U64; name: string; nameLen: number; index: U64 | undefined; filetype: number; item: boolean; dirIndex: boolean; inodeRef: boolean; errors: string[]; key: Key }
    const refs: Ref[] = [];
    const find = (dir: U64, name: string, nameLen: number, key: Key): Ref => {
      for (const r of refs) if (r.dir === dir && r.name === name) return r;
      const r: Ref = { dir, name, nameLen, index: undefined, filetype: 0, item: false, dirIndex: false, inodeRef: false, errors: [], key };
      refs.push(r);
      return r;
    };
    let foundLink = ino === FREE_INO ? 1 : 0;
    for (const e of entries) {
      const k = entryKey(e);
      const b = find(e.dir, e.name, e.nameLen, k);
      // A name's findings carry the smallest key of its entries, whatever order they were gathered in: a
      // snapshot checked by difference lists kept entries before new ones, a full walk of a cross-linked
      // tree lists them in walk order, and both must report the same finding.
      if (compareKeys(k, b.key) < 0) b.key = k;
      if (e.nameLen > 255) b.errors.push('name too long');
      if (e.isIndex) {
        if (b.dirIndex) b.errors.push('dup dir index');
        if (b.inodeRef && b.index !== e.index) b.errors.push('index mismatch');
        if (b.item && b.filetype !== e.ftype) b.errors.push('filetype mismatch');
        b.index = e.index;
        b.filetype = e.ftype;
        b.dirIndex = true;
      } else {
        foundLink++;
        if (b.item) b.errors.push('dup dir item');
        if (b.dirIndex && b.filetype !== e.ftype) b.errors.push('filetype mismatch');
        b.filetype = e.ftype;
        b.item = true;
      }
    }
    for (const r of own?.refs ?? []) {
      const b = find(r.dir, r.name, Buffer.byteLength(r.name, 'latin1'), r.key ?? { objectid: toBig(ino), type: KEY.INODE_REF, offset: toBig(r.dir) });
      if (b.inodeRef) b.errors.push('dup inode ref');
      if (b.dirIndex && b.index !== r.index) b.errors.push('index mismatch');
      else b.index = r.index;
      b.inodeRef = true;
    }
    const notes: Note[] = own ? this.shapeErrors(own) : [];
    const key = own ? own.itemKey ?? own.firstKey : firstEntryKey(entries);
    const found = own?.found ?? false;
    const nlink = own?.nlink ?? 0;
    if (found && nlink === 0 && !orphans.has(ino)) notes.push(['unreferenced', 'no orphan item (unreferenced inode)', key]);
    if (!found) notes.unshift(['no-inode-item', 'no inode item', key]);
    if (foundLink !== nlink) notes.push(['nlink', `link count wrong, nlink ${nlink} but found ${foundLink} name(s)`, key]);
    for (const b of refs) {
      const problems = [...b.errors];
      if (b.item && b.dirIndex && filetype !== undefined && b.filetype !== filetype && !problems.includes('filetype mismatch')) problems.push('filetype mismatch');
      if (!b.item) problems.push('no dir item');
      if (!b.dirIndex) problems.push('no dir index');
      if (!b.inodeRef) problems.push('no inode ref');
      if (!problems.length) continue;
      const what = `unresolved ref dir ${b.dir} index ${b.index ?? 0} namelen ${b.nameLen} name ${printable(b.name)} filetype ${b.filetype}`;
      for (const p of problems) {
        const code = p === 'no dir item' ? 'no-dir-item' : p === 'no dir index' ? 'no-dir-index' : p === 'no inode ref' ? 'no-inode-ref' : p.replace(/ /g, '-');
        notes.push([code, `${what}, ${p}`, b.key]);
      }
    }
    return notes.length ? notes : undefined;
  }

  /** The root directory: one inode item, nlink 1, and no name but its ".." reference to itself with index 0. */
  private evaluateRootDir(own: Own | undefined, entries: Entry[] | undefined): Note[] {
    if (!own && !entries) return [];
    const key = own ? own.itemKey ?? own.firstKey : firstEntryKey(entries!);
    const notes: Note[] = own ? this.shapeErrors(own) : [];
    const err = (code: string, text: string) => { notes.push([code, text, key]); return notes; };
    if (!own?.found) return err('no-inode-item', 'no inode item (root directory)');
    const items = (entries ?? []).filter((e) => !e.isIndex).length;
    if (own.nlink !== 1 || items !== 0) return err('root-dir-nlink', `link count wrong, root directory has nlink ${own.nlink} and ${items} dir item(s) naming it`);
    const refs = own.refs ?? [];
    const self = refs[0] ?? entries?.[0];
    if (!self) return err('root-dir-no-ref', 'no root backref (the root directory lacks its ".." inode ref)');
    if (!refs.length) return err('root-dir-no-ref', 'no inode ref (the root directory lacks its ".." inode ref)');
    const r = refs[0]!;
    if (r.index !== 0 || r.name !== '..') {
      return err('root-dir-ref', `odd dir item (the root directory's self reference is index ${r.index} name ${printable(r.name)}, expect index 0 name ..)`);
    }
    if ((entries ?? []).some((e) => e.isIndex && e.dir === r.dir && e.name === r.name)) return err('root-dir-ref', 'dup dir index (a dir index names the root directory)');
    for (const b of refs.slice(1)) {
      err('root-dir-ref', `unresolved ref dir ${b.dir} index ${b.index} namelen ${Buffer.byteLength(b.name, 'latin1')} name ${printable(b.name)}: the root directory has a second name`);
    }
    return notes;
  }
}

/** A copy of a map, made without the [key, value] pair per entry that `new Map(map)` allocates. */
function copyMap<K, V>(m: Map<K, V>): Map<K, V> {
  const out = new Map<K, V>();
  m.forEach((v, k) => out.set(k, v));
  return out;
}

/** A leaf of a tree: where it is, what its parent expects of it, and the objectid of its first key. */
interface LeafPos { bytenr: bigint; first: U64; exp: { bytenr: bigint; level: number; generation: bigint; firstKey: Key; owner: bigint } }

/** A tree's leaves in key order, from its nodes alone (no leaf is read). */
async function leafOrder(ctx: CheckContext, loc: { objectid: bigint; bytenr: bigint; level: number; generation: bigint }): Promise<LeafPos[]> {
  const out: LeafPos[] = [];
  if (loc.level === 0) {
    const b = await readBlock(ctx, { bytenr: loc.bytenr, level: 0, generation: loc.generation, owner: loc.objectid });
    const first = b.firstKey();
    out.push({ bytenr: b.bytenr, first: first ? fromBig(first.objectid) : 0, exp: { bytenr: b.bytenr, level: 0, generation: loc.generation, firstKey: first ?? { objectid: 0n, type: 0, offset: 0n }, owner: loc.objectid } });
    return out;
  }
  const visit = async (exp: BlockExpectation): Promise<void> => {
    const b = await readBlock(ctx, exp);
    if (b.level === 1) {
      for (const p of b.ptrs) {
        out.push({ bytenr: p.blockptr, first: fromBig(p.key.objectid), exp: { bytenr: p.blockptr, level: 0, generation: p.generation, firstKey: p.key, owner: loc.objectid } });
      }
      return;
    }
    const kids = childExps(b, loc.objectid);
    prefetch(ctx, kids);
    for (const k of kids) await visit(k);
  };
  await visit({ bytenr: loc.bytenr, level: loc.level, generation: loc.generation, owner: loc.objectid });
  return out;
}
