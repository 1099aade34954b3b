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
import { HEADER_SIZE, ITEM_SIZE, KEY, OBJ, S_IFMT } from '../format/constants.js';
import { compareKeys, type Key } from '../format/key.js';
import type { TreeBlock } from '../format/tree-block.js';
import { BtrfsError } from '../util/errors.js';
import type { BlockExpectation } from '../verify/tree-checker.js';
import type { CheckContext, RootRecord } from './context.js';
import {
  FREE_INO, FREE_SPACE_OBJECTID, FT_OF_MODE, LeafScanner, ORPHAN_OBJECTID, Own, printable, type ItemSink, type Note, type SubvolEntry,
} from './inode-items.js';
import { Screener } from './inode-screen.js';
import { forEachLeaf, leafOrder, prefetch, readBlock, type LeafPos } from './walk.js';
import { addrKey, fromBig, readU64, toBig, type AddrKey, type U64 } from './u64.js';

export type { SubvolEntry } from './inode-items.js';

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

/** Trees that hold inodes: the top level, subvolumes and snapshots, and both relocation trees. */
export function isFsTree(objectid: bigint): boolean {
  return objectid === OBJ.FS_TREE || objectid === OBJ.DATA_RELOC_TREE || objectid === OBJ.TREE_RELOC
    || (objectid >= OBJ.FIRST_FREE && objectid <= OBJ.LAST_FREE);
}

export interface InodeOptions {
  /** check a snapshot by its difference from a tree already checked (default true) */
  incremental?: boolean;
  /**
   * screen each tree first by fingerprints (inode-screen.ts) and check only
   * the trees it does not pass name by name (default true); false checks
   * every tree name by name, with the same findings, slower
   */
  screen?: boolean;
}

/** A preallocated range with checksums, found in a tree's file. */
export interface PreallocCsum { tree: bigint; ino: U64; key: Key; start: U64; len: U64 }

/**
 * Checksums over unwritten space are only possible if another file wrote
 * this very extent. btrfs check looks the range up as an extent of its own
 * and then for a written (regular) reference to it; anything else is an
 * odd csum item.
 */
export function judgePrealloc(ctx: CheckContext, list: PreallocCsum[], written: Set<AddrKey>): void {
  for (const p of list) {
    const e = ctx.extents.get(addrKey(p.start));
    const where = { tree: p.tree, key: p.key, inode: toBig(p.ino) };
    if (!e || e.metadata || e.numBytes !== toBig(p.len)) {
      ctx.report.error('odd-csum-item', `root ${p.tree} inode ${p.ino} errors: odd csum item (preallocated range [${p.start} ${p.len}] has checksums and is not an extent of its own)`, where);
    } else if (!written.has(addrKey(p.start))) {
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
export async function inodePass(ctx: CheckContext, onSubvolEntry: (e: SubvolEntry) => void, opts: InodeOptions = {}): Promise<{ prealloc: PreallocCsum[]; written: Set<AddrKey> }> {
  const pass = new InodePass(ctx, onSubvolEntry, opts.incremental ?? true, opts.screen ?? true);
  const trees = ctx.roots.filter((r) => isFsTree(r.objectid) && !r.partiallyDropped);
  for (let i = 0; i < trees.length; i++) {
    ctx.onProgress?.(`inodes of root ${trees[i]!.objectid}`, i / trees.length);
    await pass.checkTree(trees[i]!);
  }
  return { prealloc: pass.preallocCsums, written: pass.writtenExtents };
}

class InodePass {
  readonly preallocCsums: PreallocCsum[] = [];
  private readonly kept: TreeState[] = [];
  private readonly scanner: LeafScanner;
  private readonly screener: Screener | undefined;

  constructor(private readonly ctx: CheckContext, private readonly onSubvolEntry: (e: SubvolEntry) => void, private readonly incremental: boolean, screen: boolean) {
    this.scanner = new LeafScanner(ctx);
    if (screen) this.screener = new Screener(ctx, this.scanner);
  }

  get writtenExtents(): Set<AddrKey> { return this.scanner.writtenExtents; }

  async checkTree(root: RootRecord): Promise<void> {
    const { report } = this.ctx;
    const tree = root.objectid;
    if (root.item.generation > this.scanner.superGen + 1n) {
      report.error('root-generation', `invalid generation for root ${tree}, have ${root.item.generation} expect (0, ${this.scanner.superGenLimit}]`,
        { tree: OBJ.ROOT_TREE, key: { objectid: tree, type: KEY.ROOT_ITEM, offset: root.offset } });
    }
    // A subvolume whose last name is gone is being deleted: its inodes no longer count.
    if (root.item.refs === 0) return;
    const loc = { objectid: tree, bytenr: root.item.bytenr, level: root.item.level, generation: root.item.generation };
    let order: LeafPos[] | undefined;
    if (this.screener) {
      try {
        if (this.incremental && this.screener.keptAny) order = await leafOrder(this.ctx, loc);
        const r = await this.screener.screen(root, order);
        if (r.sound) {
          report.stats.inodes += r.inodes;
          report.stats.screenedTrees++;
          for (const e of r.subvol) this.onSubvolEntry({ ...e, tree });
          return;
        }
      } catch (e) {
        // The exact pass meets the same damage, and reports it.
        if (!(e instanceof BtrfsError)) throw e;
      }
    }
    let state: TreeState | undefined;
    try {
      if (this.incremental && this.kept.length) {
        order ??= await leafOrder(this.ctx, loc);
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
      this.scanner.scanLeaf(leaf, new ExactSink(s), dataReloc, undefined, true, true);
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
    const sink = new ExactSink(fresh);
    for (let i = 0; i < order.length; i++) {
      const l = order[i]!;
      const b = addedBlocks.get(l.bytenr);
      if (b) { this.scanner.scanLeaf(b, sink, dataReloc, undefined, true, true); continue; }
      if (!holds(l.first, order[i + 1]?.first)) continue;
      this.scanner.scanLeaf(await readBlock(this.ctx, l.exp), sink, dataReloc, ownChanged, false, true);
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
        && index.index === r.index && item.ftype === filetype && index.ftype === filetype && item.nameLen <= 255 && this.scanner.soundShape(own)) {
        return undefined;
      }
    }
    return this.evaluateSlow(ino, own, entries ?? [], orphans, filetype);
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
    const key = own ? ownKey(own) : firstEntryKey(entries);
    const notes: Note[] = own ? this.scanner.shapeNotes(own, key) : [];
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
    const key = own ? ownKey(own) : firstEntryKey(entries!);
    const notes: Note[] = own ? this.scanner.shapeNotes(own, key) : [];
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

/** The key a finding about an inode is filed under: its inode item's, else its first item's. */
const ownKey = (o: Own): Key => o.itemKey ?? o.firstKey!;

/** The exact pass keeps every name and entry of a tree, with the leaf each entry came from. */
class ExactSink implements ItemSink {
  constructor(private readonly s: TreeState) {}

  own(ino: U64, leaf: TreeBlock, slot: number): Own {
    let o = this.s.own.get(ino);
    if (!o) this.s.own.set(ino, o = new Own(leaf.itemKeyAt(slot)));
    return o;
  }

  ref(o: Own, _ino: U64, dir: U64, index: U64, d: Buffer, nameAt: number, nameEnd: number, key: Key | undefined): void {
    (o.refs ??= []).push({ dir, index, name: d.toString('latin1', nameAt, nameEnd), key });
  }

  entry(target: U64, dir: U64, d: Buffer, nameAt: number, nameEnd: number, nameLen: number, index: U64, ftype: number, isIndex: boolean, leaf: TreeBlock): void {
    const e: Entry = { dir, name: d.toString('latin1', nameAt, nameEnd), nameLen, index, ftype, isIndex, leaf: leaf.bytenr };
    const list = this.s.incoming.get(target);
    if (list) list.push(e); else this.s.incoming.set(target, [e]);
  }

  orphan(ino: U64): void { this.s.orphans.add(ino); }

  subvol(e: SubvolEntry & { leaf: bigint }): void { this.s.subvol.push({ ...e, tree: this.s.tree }); }
}

/** A copy of a map, made without the [key, value] pair per entry that `new Map(map)` allocates. */
function copyMap<K, V>(m: Map<K, V>): Map<K, V> {
  const out = new Map<K, V>();
  m.forEach((v, k) => out.set(k, v));
  return out;
}
