/**
 * A running transaction (the kernel's btrfs_trans_handle, bbolt's Tx): every
 * change between two commits. It is the TreeStore under the COW B-tree —
 * blocks come from the space manager, freed blocks become delayed refs, new
 * block images wait in memory — and the item-level API (TreeItems) the
 * layers above use on any tree by objectid, plus data extents: allocation,
 * writing with checksums, and references.
 *
 * Nothing reaches the device before commit except file data, which only
 * ever goes to space the last commit does not use, so a crash at any point
 * leaves the image as its last commit made it.
 */
import { BtrfsError } from '../util/errors.js';
import { checksum } from '../util/checksum.js';
import { KEY, OBJ, ROOT_FLAG, EXTENT_FLAG } from '../format/constants.js';
import { decodeExtentItem } from '../format/items/extent-item.js';
import { decodeFileExtentItem, isInlineExtent } from '../format/items/file-extent-item.js';
import type { BlockView } from '../tree/cow-node.js';
import { key, KEY_MAX, KEY_MIN, type Key } from '../format/key.js';
import { decodeRootItem, encodeRootItem, type RootItem } from '../format/items/root-item.js';
import type { TreeBlock } from '../format/tree-block.js';
import { CowTree, type CursorItem, type ItemToInsert } from '../tree/cow.js';
import type { RootLocation } from '../tree/search.js';
import type { TreeStore, TreeItems } from '../tree/tree-store.js';
import type { FsInfo } from '../tree/fs-info.js';
import type { SpaceManager } from '../extent/block-groups.js';
import { DelayedRefs, type DataRefKey } from '../extent/delayed-refs.js';
import { insertCsums, deleteCsums, type CsumGeometry } from '../extent/csum-tree.js';

/** A data extent and one file extent item's reference to it. */
export interface DataRef extends DataRefKey {
  bytenr: bigint;
  numBytes: bigint;
}

/** Subvolume trees (and the data relocation tree) are reference counted: snapshots share their blocks. */
export function isShareable(tree: bigint): boolean {
  return tree === OBJ.FS_TREE || tree === OBJ.DATA_RELOC_TREE || (tree >= OBJ.FIRST_FREE && tree <= OBJ.LAST_FREE);
}

/** The largest data extent the kernel makes (BTRFS_MAX_EXTENT_SIZE). */
export const MAX_DATA_EXTENT = 128 * 1024 * 1024;

/** Data writes writeDataBehind lets run at once (bytes); bounds the memory they hold. */
const WRITE_BEHIND_BYTES = 64 * 1024 * 1024;

export interface TransactionHost {
  readonly info: FsInfo;
  readonly space: SpaceManager;
  /** the chunk tree uuid every tree block header carries */
  readonly chunkTreeUuid: Buffer;
  /** the current time, seconds and nanoseconds (injectable for tests) */
  now(): { sec: bigint; nsec: number };
}

interface TrackedRoot { offset: bigint; item: RootItem; itemSize: number; dirty: boolean }

export class Transaction implements TreeStore, TreeItems {
  readonly generation: bigint;
  readonly tree: CowTree;
  readonly refs = new DelayedRefs();
  /** encoded images of this transaction's blocks, by bytenr (written at commit) */
  readonly pending = new Map<bigint, Buffer>();
  rootTree: RootLocation;
  chunkRoot: RootLocation;
  chunkTreeChanged = false;
  private roots = new Map<bigint, TrackedRoot>();
  /** trees whose location changed since their root item was last written */
  private moved = new Set<bigint>();
  private usedDelta = new Map<bigint, bigint>();
  /** fs trees changed in this transaction (their root item's ctransid/ctime move) */
  readonly changedSubvols = new Set<bigint>();
  private readonly geometry: CsumGeometry;
  /** a failure that left memory and the trees out of step: only abort is possible */
  poisoned: unknown;
  /** writeDataBehind writes not yet done, and their bytes */
  private readonly inflight = new Set<Promise<void>>();
  private inflightBytes = 0;
  private writeError: unknown;

  constructor(readonly host: TransactionHost) {
    const info = host.info;
    this.generation = info.sb.generation + 1n;
    this.rootTree = { ...info.treeRoot };
    this.chunkRoot = { ...info.chunkRoot };
    this.geometry = { sectorsize: info.sectorsize, csumSize: info.csumSize, nodesize: info.nodesize };
    this.tree = new CowTree(this);
    info.reader.overlay = this.pending;
    info.reader.ctx.superGeneration = this.generation;
  }

  // --- TreeStore ---------------------------------------------------------
  get nodesize(): number { return this.host.info.nodesize; }
  get sectorsize(): number { return this.host.info.sectorsize; }
  get csumType(): number { return this.host.info.csumType; }
  get fsid(): Buffer { return this.host.info.reader.ctx.fsid; }
  get chunkTreeUuid(): Buffer { return this.host.chunkTreeUuid; }
  get incompat(): bigint { return this.host.info.sb.incompat_flags; }

  read(bytenr: bigint, level: number, generation?: bigint): Promise<TreeBlock> {
    return this.host.info.reader.read({ bytenr, level, generation });
  }

  async allocBlock(owner: bigint, level: number): Promise<bigint> {
    const ns = BigInt(this.nodesize);
    const kind = owner === OBJ.CHUNK_TREE ? 'system' : 'metadata';
    const { start } = await this.host.space.allocate(kind, ns, ns, ns);
    this.refs.newTreeBlock(start, owner, level);
    this.usedDelta.set(owner, (this.usedDelta.get(owner) ?? 0n) + ns);
    return start;
  }

  freeBlock(bytenr: bigint, owner: bigint, level: number): void {
    this.refs.treeRef(bytenr, level, owner, { root: owner }, -1);
    this.pending.delete(bytenr);
    this.usedDelta.set(owner, (this.usedDelta.get(owner) ?? 0n) - BigInt(this.nodesize));
  }

  /**
   * The kernel's update_ref_for_cow. A block of a snapshotted tree may be
   * shared: its extent item then counts more than one reference. The copy
   * this tree now uses needs references to every child too, which come
   * either from the tree (TREE_BLOCK_REF / EXTENT_DATA_REF of `owner`) or,
   * when this tree created the old block, by turning the old block's
   * children over to parent-based refs (FULL_BACKREF), so the snapshot
   * keeps reaching them through the old block while this tree's refs now
   * stand for the copy.
   */
  async cowBlock(old: BlockView, owner: bigint): Promise<bigint> {
    const bytenr = await this.allocBlock(owner, old.level);
    await this.handOver(old, owner, bytenr);
    return bytenr;
  }

  /** A merge emptied `old` into another block of `owner`: references move as for a copy, then `old` is let go. */
  async dropBlock(old: BlockView, owner: bigint): Promise<void> {
    await this.handOver(old, owner);
  }

  /**
   * update_ref_for_cow's reference moves, from `old` to the block of
   * `owner` that holds its content now (`copy`, or a merge's target), and
   * the tree's reference to `old` dropped.
   */
  private async handOver(old: BlockView, owner: bigint, copy?: bigint): Promise<void> {
    const { refs, flags } = await this.extentInfo(old, owner);
    const full = (flags & EXTENT_FLAG.FULL_BACKREF) !== 0n;
    if (refs > 1n) {
      if (old.owner === owner && !full) {
        this.incRef(old, owner, true, 1);
        this.refs.setTreeBlockFlags(old.bytenr, old.level, old.owner, EXTENT_FLAG.FULL_BACKREF);
      } else {
        this.incRef(old, owner, false, 1, copy);
      }
    } else if (full) {
      this.incRef(old, owner, false, 1, copy);
      this.incRef(old, owner, true, -1);
    }
    this.freeBlock(old.bytenr, owner, old.level);
  }

  /** References and flags of a tree block as the extent tree will say after this transaction's pending changes. */
  async extentInfo(b: BlockView, tree: bigint): Promise<{ refs: bigint; flags: bigint }> {
    if (!(await this.canBeShared(b, tree))) return { refs: 1n, flags: 0n };
    const pend = this.refs.pendingMeta(b.bytenr);
    if (pend?.isNew) return { refs: BigInt(pend.delta), flags: pend.setFlags };
    const ext = await this.rootOf(OBJ.EXTENT_TREE);
    let raw = await this.tree.lookup(ext, key(b.bytenr, KEY.METADATA_ITEM, BigInt(b.level)));
    let skinny = true;
    if (!raw) {
      raw = await this.tree.lookup(ext, key(b.bytenr, KEY.EXTENT_ITEM, BigInt(this.nodesize)));
      skinny = false;
    }
    if (!raw) throw new BtrfsError('EUCLEAN', `tree block ${b.bytenr} of tree ${tree} has no extent item`, { tree: OBJ.EXTENT_TREE, block: b.bytenr });
    const item = decodeExtentItem(raw, { skinny });
    return { refs: item.refs + BigInt(pend?.delta ?? 0), flags: item.flags | (pend?.setFlags ?? 0n) };
  }

  /** The kernel's btrfs_block_can_be_shared: only subvolume trees are shared, and only blocks from before their last snapshot. */
  private async canBeShared(b: BlockView, tree: bigint): Promise<boolean> {
    if (!isShareable(tree)) return false;
    const t = await this.tracked(tree);
    return b.generation <= t.item.last_snapshot;
  }

  /**
   * btrfs_inc_ref / btrfs_dec_ref: a reference (`delta` +1 or -1) from block
   * `b` — or from its copy at `viaCopy` — to each child block or, in a leaf,
   * to each data extent. `full` makes them parent-based refs (parent = b).
   */
  incRef(b: BlockView, tree: bigint, full: boolean, delta: number, viaCopy?: bigint): void {
    void viaCopy;
    if (b.level > 0) {
      for (const p of b.ptrs) {
        this.refs.treeRef(p.blockptr, b.level - 1, tree, full ? { parent: b.bytenr } : { root: tree }, delta);
      }
      return;
    }
    for (const it of b.items) {
      if (it.key.type !== KEY.EXTENT_DATA) continue;
      const fe = decodeFileExtentItem(it.data);
      if (isInlineExtent(fe) || fe.disk_bytenr === 0n) continue;
      const ref = full ? { parent: b.bytenr } : { root: tree, ino: it.key.objectid, offset: BigInt.asUintN(64, it.key.offset - fe.offset) };
      this.refs.dataRef(fe.disk_bytenr, fe.disk_num_bytes, ref, delta);
    }
  }

  writeDirty(bytenr: bigint, buf: Buffer): void {
    this.pending.set(bytenr, buf);
  }

  // --- roots -------------------------------------------------------------
  /** Where tree `objectid`'s root is now; ENOENT if there is no such tree. */
  async rootOf(objectid: bigint): Promise<RootLocation> {
    if (objectid === OBJ.ROOT_TREE) return this.rootTree;
    if (objectid === OBJ.CHUNK_TREE) return this.chunkRoot;
    const t = await this.tracked(objectid);
    return { objectid, bytenr: t.item.bytenr, level: t.item.level, generation: t.item.generation };
  }

  /** The tree's root item as it stands in this transaction (a copy). */
  async rootItem(objectid: bigint): Promise<{ offset: bigint; item: RootItem }> {
    const t = await this.tracked(objectid);
    return { offset: t.offset, item: { ...t.item } };
  }

  /** Replaces fields of a tree's root item (written with the next sync or commit). */
  async setRootItem(objectid: bigint, change: Partial<RootItem>): Promise<void> {
    const t = await this.tracked(objectid);
    Object.assign(t.item, change);
    t.dirty = true;
    this.moved.add(objectid);
  }

  private async tracked(objectid: bigint): Promise<TrackedRoot> {
    let t = this.roots.get(objectid);
    if (t) return t;
    const it = await this.tree.lastItem(this.rootTree, key(objectid, KEY.ROOT_ITEM, 0n), key(objectid, KEY.ROOT_ITEM, KEY_MAX.offset));
    if (!it) throw new BtrfsError('ENOENT', `no root item for tree ${objectid}`, { tree: objectid });
    const item = decodeRootItem(it.data);
    t = { offset: it.key.offset, item, itemSize: it.data.length, dirty: false };
    this.roots.set(objectid, t);
    return t;
  }

  /** `touch`: the change is one of the subvolume's content (its ctransid moves); false for a snapshot's copy of its root. */
  private async setRoot(tree: bigint, loc: RootLocation, touch = true): Promise<void> {
    if (tree === OBJ.ROOT_TREE) { this.rootTree = loc; return; }
    if (tree === OBJ.CHUNK_TREE) {
      this.chunkRoot = loc;
      this.chunkTreeChanged = true;
      return;
    }
    const t = await this.tracked(tree);
    if (touch && (tree === OBJ.FS_TREE || (tree >= OBJ.FIRST_FREE && tree <= OBJ.LAST_FREE))) this.changedSubvols.add(tree);
    if (t.item.bytenr === loc.bytenr && t.item.level === loc.level && t.item.generation === loc.generation) return;
    t.item.bytenr = loc.bytenr;
    t.item.level = loc.level;
    t.item.generation = loc.generation;
    t.item.generation_v2 = loc.generation;
    t.dirty = true;
    this.moved.add(tree);
  }

  /** Rewrites one root item as it is, so the root tree is copied into this transaction. */
  async touchRootTree(): Promise<void> {
    const t = await this.tracked(OBJ.EXTENT_TREE);
    t.dirty = true;
    this.moved.add(OBJ.EXTENT_TREE);
    await this.syncRootItems();
  }

  /** True while some tree's root item lags behind its tree. */
  get rootsMoved(): boolean { return this.moved.size > 0; }

  /**
   * Writes the root item of every tree that moved into the root tree. Fs
   * trees changed in this transaction get ctransid/ctime, as the kernel's
   * btrfs_update_root_times does.
   */
  async syncRootItems(): Promise<void> {
    const now = this.host.now();
    for (const sv of this.changedSubvols) {
      const t = await this.tracked(sv);
      if (t.item.ctransid !== this.generation || t.item.ctime.sec !== now.sec) {
        t.item.ctransid = this.generation;
        t.item.ctime = { sec: now.sec, nsec: now.nsec };
        t.dirty = true;
        this.moved.add(sv);
      }
    }
    this.changedSubvols.clear();
    while (this.moved.size > 0) {
      const ids = [...this.moved];
      this.moved.clear();
      for (const id of ids) {
        const t = this.roots.get(id)!;
        const d = this.usedDelta.get(id);
        if (d) {
          t.item.bytes_used += d;
          if (t.item.bytes_used < 0n) t.item.bytes_used = 0n;
          this.usedDelta.delete(id);
        }
        const k = key(id, KEY.ROOT_ITEM, t.offset);
        const buf = encodeRootItem(t.item, t.itemSize);
        this.rootTree = await this.tree.updateItem(this.rootTree, k, buf);
        t.dirty = false;
      }
    }
  }

  /**
   * The tree part of a snapshot: `src`'s root block copied to a new block
   * owned by `newId`, every child gaining a reference from `newId`, and
   * `src` marked as snapshotted now (its blocks may be shared from here
   * on). Call at the start of a transaction, after committing the changes
   * before it: blocks of the running transaction are changed in place, so
   * none may be shared. Returns the new tree's root.
   */
  async snapshotTree(src: bigint, newId: bigint): Promise<RootLocation> {
    const r = await this.rootOf(src);
    const { root, copy, copyNode } = await this.tree.copyRoot(r, newId);
    await this.setRoot(src, root, false);
    this.incRef(copyNode, newId, false, 1);
    await this.setRootItem(src, { last_snapshot: this.generation });
    return copy;
  }

  /** Registers a tree created in this transaction together with its root item (subvolumes, snapshots). */
  async addRoot(objectid: bigint, offset: bigint, item: RootItem): Promise<void> {
    const k = key(objectid, KEY.ROOT_ITEM, offset);
    this.rootTree = await this.tree.insertItem(this.rootTree, k, encodeRootItem(item));
    this.roots.set(objectid, { offset, item: { ...item }, itemSize: encodeRootItem(item).length, dirty: false });
  }

  /** Forgets a cached root item (after its item was deleted or re-keyed by the caller). */
  forgetRoot(objectid: bigint): void {
    this.roots.delete(objectid);
    this.moved.delete(objectid);
  }

  /** Whether a tree is read-only by its root item's flags. */
  async isReadOnly(objectid: bigint): Promise<boolean> {
    const t = await this.tracked(objectid);
    return (t.item.flags & ROOT_FLAG.SUBVOL_RDONLY) !== 0n;
  }

  // --- TreeItems -----------------------------------------------------------
  async lookup(tree: bigint, k: Key): Promise<Buffer | undefined> {
    return this.tree.lookup(await this.rootOf(tree), k);
  }

  async *iter(tree: bigint, min: Key = KEY_MIN, max: Key = KEY_MAX): AsyncGenerator<CursorItem> {
    yield* this.tree.iterItems(await this.rootOf(tree), min, max);
  }

  async last(tree: bigint, min: Key, max: Key): Promise<CursorItem | undefined> {
    return this.tree.lastItem(await this.rootOf(tree), min, max);
  }

  async insert(tree: bigint, k: Key, data: Uint8Array): Promise<void> {
    await this.guard(async () => this.setRoot(tree, await this.tree.insertItem(await this.rootOf(tree), k, data)));
  }

  async insertItems(tree: bigint, items: readonly ItemToInsert[]): Promise<void> {
    await this.guard(async () => this.setRoot(tree, await this.tree.insertItems(await this.rootOf(tree), items)));
  }

  async update(tree: bigint, k: Key, data: Uint8Array): Promise<void> {
    await this.guard(async () => this.setRoot(tree, await this.tree.updateItem(await this.rootOf(tree), k, data)));
  }

  async delete(tree: bigint, k: Key): Promise<void> {
    await this.guard(async () => this.setRoot(tree, await this.tree.deleteItem(await this.rootOf(tree), k)));
  }

  async deleteItems(tree: bigint, keys: readonly Key[]): Promise<void> {
    await this.guard(async () => this.setRoot(tree, await this.tree.deleteItems(await this.rootOf(tree), keys)));
  }

  async resize(tree: bigint, k: Key, newSize: number, opts?: { fromFront?: boolean }): Promise<void> {
    await this.guard(async () => this.setRoot(tree, await this.tree.resizeItem(await this.rootOf(tree), k, newSize, opts)));
  }

  /**
   * Runs a tree change. The COW B-tree checks its preconditions (EEXIST,
   * ENOENT, sizes) before touching a block, so those errors leave the
   * transaction usable; anything thrown after it started changing blocks
   * (ENOSPC from a split, an I/O error) poisons it: commit refuses, only
   * abort remains.
   */
  private async guard(fn: () => Promise<void>): Promise<void> {
    if (this.poisoned) throw new BtrfsError('EIO', 'transaction aborted by an earlier error; abort and reopen', { cause: this.poisoned });
    try {
      await fn();
    } catch (e) {
      const benign = e instanceof BtrfsError && ['EEXIST', 'ENOENT', 'EINVAL', 'EOVERFLOW'].includes(e.code);
      if (!benign) this.poisoned = e;
      throw e;
    }
  }

  // --- data ----------------------------------------------------------------
  /**
   * A new data extent of `len` bytes (a multiple of the sector size, at most
   * MAX_DATA_EXTENT), or a shorter one of at least one sector when free
   * space is fragmented. It must get a reference (addDataRef) in this
   * transaction or it is freed at commit.
   */
  async allocData(len: number): Promise<{ bytenr: bigint; len: number }> {
    const sec = this.sectorsize;
    if (!Number.isSafeInteger(len) || len <= 0 || len % sec !== 0 || len > MAX_DATA_EXTENT) {
      throw new BtrfsError('EINVAL', `data extent of ${len} bytes: must be a positive multiple of ${sec} up to ${MAX_DATA_EXTENT}`);
    }
    if (this.poisoned) throw new BtrfsError('EIO', 'transaction aborted by an earlier error; abort and reopen', { cause: this.poisoned });
    const got = await this.host.space.allocate('data', BigInt(len), BigInt(sec), BigInt(sec));
    this.refs.newDataExtent(got.start, got.len);
    return { bytenr: got.start, len: Number(got.len) };
  }

  /**
   * Shortens a data extent from allocData before any reference to it, giving
   * back the unused tail (a stream whose length was not known in advance).
   */
  trimData(bytenr: bigint, oldLen: number, newLen: number): void {
    const sec = this.sectorsize;
    if (newLen <= 0 || newLen > oldLen || newLen % sec !== 0) throw new BtrfsError('EINVAL', `cannot trim data extent ${bytenr} from ${oldLen} to ${newLen} bytes`);
    if (newLen === oldLen) return;
    this.refs.shrinkNewData(bytenr, BigInt(newLen));
    this.host.space.unallocate(bytenr + BigInt(newLen), bytenr + BigInt(oldLen));
  }

  /** Bytes of data that can still be allocated (free data space plus unallocated device space). */
  dataRoom(): Promise<bigint> {
    return this.host.space.dataRoom();
  }

  /**
   * Writes `data` (whole sectors) at logical `bytenr` of an extent allocated
   * in this transaction, to every copy, and records its checksums — unless
   * `csum` is false: data of NODATASUM inodes has none, and btrfs check
   * calls checksums there an error.
   */
  async writeData(bytenr: bigint, data: Buffer, opts: { csum?: boolean } = {}): Promise<void> {
    const sec = this.sectorsize;
    if (data.length === 0 || data.length % sec !== 0) throw new BtrfsError('EINVAL', `data write of ${data.length} bytes is not whole sectors`);
    const info = this.host.info;
    for (const c of info.chunks.map(bytenr, data.length)) {
      if (c.devid !== info.sb.dev_item.devid) throw new BtrfsError('ENOTSUP', `logical ${bytenr} lives on device ${c.devid}`);
      await info.device.write(Number(c.physical), data);
    }
    if (opts.csum === false) return;
    const csums = this.sectorCsums(data);
    await this.guard(() => insertCsums(this, this.geometry, bytenr, csums));
  }

  /** One checksum per sector of `data`, as the csum tree holds them. */
  private sectorCsums(data: Buffer): Buffer {
    const sec = this.sectorsize;
    const cs = this.host.info.csumSize;
    const csums = Buffer.alloc((data.length / sec) * cs);
    for (let i = 0, o = 0; i < data.length; i += sec, o += cs) checksum(this.csumType, data.subarray(i, i + sec)).copy(csums, o, 0, cs);
    return csums;
  }

  /**
   * writeData without waiting for the device: the write is started and the
   * call returns once the checksums are in the tree, so the caller can read
   * its next input while earlier data is still being written. `data` belongs
   * to the transaction from here on and must not be changed. `csums` (one
   * per sector, as writeData would compute them) may be given by a caller
   * that computed them elsewhere (the importer's reader thread). Waits while
   * more than WRITE_BEHIND_BYTES are in flight. Every read of data, view of
   * the transaction and commit waits for these writes first (drainData); a
   * failed write fails the next of those and poisons the transaction.
   */
  async writeDataBehind(bytenr: bigint, data: Buffer, csums?: Buffer): Promise<void> {
    const sec = this.sectorsize;
    if (data.length === 0 || data.length % sec !== 0) throw new BtrfsError('EINVAL', `data write of ${data.length} bytes is not whole sectors`);
    if (this.poisoned) throw new BtrfsError('EIO', 'transaction aborted by an earlier error; abort and reopen', { cause: this.poisoned });
    this.checkWrites();
    const info = this.host.info;
    const n = data.length / sec;
    if (csums && csums.length !== n * info.csumSize) throw new BtrfsError('EINVAL', `${csums.length} bytes of checksums for ${n} sectors`);
    for (const c of info.chunks.map(bytenr, data.length)) {
      if (c.devid !== info.sb.dev_item.devid) throw new BtrfsError('ENOTSUP', `logical ${bytenr} lives on device ${c.devid}`);
      const job = info.device.write(Number(c.physical), data).then(
        () => { this.inflightBytes -= data.length; this.inflight.delete(job); },
        (e: unknown) => { this.inflightBytes -= data.length; this.inflight.delete(job); this.writeError ??= e; },
      );
      this.inflight.add(job);
      this.inflightBytes += data.length;
    }
    const sums = csums ?? this.sectorCsums(data);
    await this.guard(() => insertCsums(this, this.geometry, bytenr, sums));
    while (this.inflightBytes > WRITE_BEHIND_BYTES && this.inflight.size > 0) await Promise.race(this.inflight);
    this.checkWrites();
  }

  /** Waits for every writeDataBehind write; throws (and poisons) if one failed. */
  async drainData(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
    this.checkWrites();
  }

  private checkWrites(): void {
    if (this.writeError === undefined) return;
    this.poisoned ??= this.writeError;
    throw new BtrfsError('EIO', 'a data write failed', { cause: this.writeError });
  }

  async readData(bytenr: bigint, len: number): Promise<Buffer> {
    if (this.inflight.size > 0) await this.drainData();
    return this.host.info.readData(bytenr, len);
  }

  addDataRef(ref: DataRef, count = 1): void {
    this.refs.dataRef(ref.bytenr, ref.numBytes, ref, count);
  }

  dropDataRef(ref: DataRef, count = 1): void {
    this.refs.dataRef(ref.bytenr, ref.numBytes, ref, -count);
  }

  /** Checksum removal for freed data (used by the extent tree update at commit). */
  deleteCsums(start: bigint, end: bigint): Promise<void> {
    return deleteCsums(this, this.geometry, start, end);
  }
}
