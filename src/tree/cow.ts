/**
 * The copy-on-write B-tree (the kernel's ctree.c, bbolt's tx/node): item
 * inserts, deletes, updates and resizes on any tree, each returning the
 * tree's new root.
 *
 * Blocks change only inside the running transaction's dirty set. A block
 * from an earlier generation is never touched: the first change to it copies
 * it to a newly allocated block (its old bytenr is freed, once) and points
 * the parent at the copy; a block already of this generation is changed in
 * place. Changed blocks stay decoded (CowNode) until flush() encodes each of
 * them once into the store, so a transaction's thousands of inserts into one
 * leaf cost one encode and one checksum.
 *
 * Operations on one CowTree run one at a time (EBUSY otherwise); the
 * transaction layer serializes them. Item data handed out (lookup, cursor)
 * is shared and must not be modified; it stays valid after later changes.
 */
import { BtrfsError } from '../util/errors.js';
import { compareKeys, formatKey, KEY_MAX, KEY_MIN, keyEquals, type Key } from '../format/key.js';
import { maxItemSize, leafDataSize } from '../format/tree-block-encode.js';
import { ITEM_SIZE } from '../format/constants.js';
import type { RootLocation } from './search.js';
import type { TreeStore } from './tree-store.js';
import { CowNode, type BlockView } from './cow-node.js';
import { fixLeafOverflow, fixLeafShrink, fixNodesUp, setParentKey, type BalanceEvent, type TreeOp } from './balance.js';

export interface ItemToInsert { key: Key; data: Uint8Array }
export interface CursorItem { key: Key; data: Buffer }

export interface ResizeOptions {
  /** when truncating, drop bytes from the front instead of the end (csum items) */
  fromFront?: boolean;
}

interface ReadPath { views: BlockView[]; slots: number[] }

export class CowTree {
  private dirty = new Map<bigint, CowNode>();
  private dirtyGeneration: bigint;
  private busy = false;
  /** how often each structural change happened (see BalanceEvent) */
  readonly stats: Partial<Record<BalanceEvent, number>> = {};

  constructor(readonly store: TreeStore) {
    this.dirtyGeneration = store.generation;
  }

  /** Blocks changed since the last flush. */
  get dirtyCount(): number { return this.dirty.size; }

  /** A new tree: one empty leaf, written at the next flush. */
  async createTree(owner: bigint): Promise<RootLocation> {
    return this.exclusive(async () => {
      const bytenr = await this.store.allocBlock(owner, 0);
      const leaf = new CowNode(bytenr, 0, owner, this.store.generation);
      this.dirty.set(bytenr, leaf);
      return { objectid: owner, bytenr, level: 0, generation: leaf.generation };
    });
  }

  /** The data of the item with exactly this key, or undefined. */
  async lookup(root: RootLocation, k: Key): Promise<Buffer | undefined> {
    const path = await this.descend(root, k);
    const leaf = path.views[0]!;
    const slot = path.slots[0]!;
    return slot >= 0 && keyEquals(leaf.keyAt(slot), k) ? leaf.items[slot]!.data : undefined;
  }

  /** The last item with min <= key <= max, dirty blocks included, or undefined. */
  async lastItem(root: RootLocation, min: Key, max: Key): Promise<CursorItem | undefined> {
    const path = await this.descend(root, max);
    // the leaf slot is < 0 only when every key sorts after max: descent takes
    // slot 0 wherever nothing smaller exists, and a child's first key equals its pointer's
    const slot = path.slots[0]!;
    if (slot < 0) return undefined;
    const it = path.views[0]!.items[slot]!;
    return compareKeys(it.key, min) < 0 ? undefined : { key: it.key, data: it.data };
  }

  /** Items with min <= key <= max in key order, dirty blocks included. Do not change the tree while iterating. */
  async *iterItems(root: RootLocation, min: Key = KEY_MIN, max: Key = KEY_MAX): AsyncGenerator<CursorItem> {
    const { views, slots } = await this.descend(root, min);
    let slot = slots[0]!;
    if (slot < 0 || compareKeys(views[0]!.keyAt(slot), min) < 0) slot++;
    for (;;) {
      const leaf = views[0]!;
      for (; slot < leaf.nritems; slot++) {
        const it = leaf.items[slot]!;
        if (compareKeys(it.key, max) > 0) return;
        yield { key: it.key, data: it.data };
      }
      let lvl = 1;
      while (lvl < views.length && slots[lvl]! + 1 >= views[lvl]!.nritems) lvl++;
      if (lvl >= views.length) return;
      slots[lvl]!++;
      for (; lvl > 0; lvl--) {
        const p = views[lvl]!.ptrs[slots[lvl]!]!;
        views[lvl - 1] = await this.view(p.blockptr, lvl - 1, p.generation);
        slots[lvl - 1] = 0;
      }
      slot = 0;
    }
  }

  async insertItem(root: RootLocation, k: Key, data: Uint8Array): Promise<RootLocation> {
    return this.insertItems(root, [{ key: k, data }]);
  }

  /**
   * Inserts every item or none: EEXIST if a key is already in the tree or
   * given twice, EOVERFLOW if an item is larger than any leaf can hold.
   */
  async insertItems(root: RootLocation, items: readonly ItemToInsert[]): Promise<RootLocation> {
    return this.exclusive(async () => {
      const max = maxItemSize(this.store.nodesize);
      const sorted = [...items].sort((a, b) => compareKeys(a.key, b.key));
      for (let i = 0; i < sorted.length; i++) {
        const it = sorted[i]!;
        if (it.data.length > max) {
          throw new BtrfsError('EOVERFLOW', `item of ${it.data.length} bytes exceeds the maximum ${max}`, { tree: root.objectid, key: it.key });
        }
        if (i > 0 && keyEquals(sorted[i - 1]!.key, it.key)) throw new BtrfsError('EEXIST', `key ${formatKey(it.key)} given twice`, { tree: root.objectid, key: it.key });
      }
      await this.probeAbsent(root, sorted);
      for (let i = 0; i < sorted.length;) {
        const r = await this.insertRun(root, sorted, i);
        root = r.root;
        i = r.next;
      }
      return root;
    });
  }

  /**
   * EEXIST unless every key is absent. Sorted keys are checked a leaf at a
   * time: a key below the leaf's upper bound is in that leaf if anywhere, so
   * a batch of neighbours costs one descent per leaf, not one per key.
   */
  private async probeAbsent(root: RootLocation, sorted: readonly ItemToInsert[]): Promise<void> {
    let leaf: BlockView | undefined;
    let hi: Key | null = null;
    for (const it of sorted) {
      if (!leaf || (hi && compareKeys(it.key, hi) >= 0)) {
        const p = await this.descend(root, it.key);
        leaf = p.views[0]!;
        hi = upperBound(p.views, p.slots);
      }
      if (leaf.search(it.key).exact) throw new BtrfsError('EEXIST', `item ${formatKey(it.key)} already exists`, { tree: root.objectid, key: it.key });
    }
  }

  /**
   * Inserts sorted[from] and, into the same leaf, the items after it that
   * belong there, until the leaf overflows (then it is balanced as a single
   * insert would be). Appends and runs of neighbouring keys thus take one
   * COW descent per leaf filled. Returns the index of the first item left.
   */
  private async insertRun(root: RootLocation, sorted: readonly ItemToInsert[], from: number): Promise<{ root: RootLocation; next: number }> {
    const first = sorted[from]!;
    const op = await this.writePath(root, first.key, 'EEXIST');
    const leaf = op.nodes[0]!;
    const hi = upperBound(op.nodes, op.slots);
    const cap = leafDataSize(this.store.nodesize);
    let slot = op.slots[0]! + 1;
    leaf.items.splice(slot, 0, { key: first.key, data: Buffer.from(first.data) });
    if (slot === 0) setParentKey(op, 0, op.slots[1] ?? 0, first.key);
    let used = leaf.used();
    let i = from + 1;
    let over = used > cap;
    while (!over && i < sorted.length) {
      const it = sorted[i]!;
      if (hi && compareKeys(it.key, hi) >= 0) break;
      slot = leaf.search(it.key).slot + 1;
      leaf.items.splice(slot, 0, { key: it.key, data: Buffer.from(it.data) });
      used += ITEM_SIZE + it.data.length;
      over = used > cap;
      i++;
    }
    if (over) await fixLeafOverflow(op, slot);
    await fixNodesUp(op);
    return { root: this.rootOf(op), next: i };
  }

  async deleteItem(root: RootLocation, k: Key): Promise<RootLocation> {
    return this.deleteItems(root, [k]);
  }

  /** Deletes every key or none: ENOENT if one is missing, EINVAL if one is given twice. */
  async deleteItems(root: RootLocation, keys: readonly Key[]): Promise<RootLocation> {
    return this.exclusive(async () => {
      const sorted = [...keys].sort(compareKeys);
      for (let i = 0; i < sorted.length; i++) {
        const k = sorted[i]!;
        if (i > 0 && keyEquals(sorted[i - 1]!, k)) throw new BtrfsError('EINVAL', `key ${formatKey(k)} given twice`, { tree: root.objectid, key: k });
        if (!(await this.lookup(root, k))) throw new BtrfsError('ENOENT', `no item ${formatKey(k)}`, { tree: root.objectid, key: k });
      }
      for (const k of sorted) root = await this.deleteOne(root, k);
      return root;
    });
  }

  /** Replaces an item's bytes with as many new ones (EINVAL if the size differs, ENOENT if absent). */
  async updateItem(root: RootLocation, k: Key, data: Uint8Array): Promise<RootLocation> {
    return this.exclusive(async () => {
      const probe = await this.lookup(root, k);
      if (!probe) throw new BtrfsError('ENOENT', `no item ${formatKey(k)}`, { tree: root.objectid, key: k });
      if (probe.length !== data.length) {
        throw new BtrfsError('EINVAL', `update of ${formatKey(k)} with ${data.length} bytes, item has ${probe.length}`, { tree: root.objectid, key: k });
      }
      const op = await this.writePath(root, k, 'ENOENT');
      const leaf = op.nodes[0]!;
      const slot = op.slots[0]!;
      leaf.items[slot] = { key: leaf.items[slot]!.key, data: Buffer.from(data) };
      return this.rootOf(op);
    });
  }

  /**
   * Grows an item (new bytes are zero, at the end) or shrinks it (keeping its
   * head, or its tail with fromFront). ENOENT if absent, EOVERFLOW past the
   * maximum item size.
   */
  async resizeItem(root: RootLocation, k: Key, newSize: number, opts: ResizeOptions = {}): Promise<RootLocation> {
    return this.exclusive(async () => {
      const max = maxItemSize(this.store.nodesize);
      if (!Number.isInteger(newSize) || newSize < 0) throw new BtrfsError('EINVAL', `bad item size ${newSize}`, { key: k });
      if (newSize > max) throw new BtrfsError('EOVERFLOW', `item of ${newSize} bytes exceeds the maximum ${max}`, { tree: root.objectid, key: k });
      const probe = await this.lookup(root, k);
      if (!probe) throw new BtrfsError('ENOENT', `no item ${formatKey(k)}`, { tree: root.objectid, key: k });
      if (probe.length === newSize) return root;
      const op = await this.writePath(root, k, 'ENOENT');
      const leaf = op.nodes[0]!;
      const slot = op.slots[0]!;
      const old = leaf.items[slot]!.data;
      let data: Buffer;
      if (newSize > old.length) {
        data = Buffer.alloc(newSize);
        old.copy(data);
      } else {
        data = Buffer.from(opts.fromFront ? old.subarray(old.length - newSize) : old.subarray(0, newSize));
      }
      leaf.items[slot] = { key: leaf.items[slot]!.key, data };
      if (leaf.overfull(this.store.nodesize)) await fixLeafOverflow(op, slot);
      else if (newSize < old.length) await fixLeafShrink(op);
      await fixNodesUp(op);
      return this.rootOf(op);
    });
  }

  /**
   * A snapshot's root (the kernel's btrfs_copy_root): the tree's root block
   * made writable in this transaction, then copied to a new block owned by
   * `newOwner`. The copy shares every child with the original; the caller
   * gives those children their new references. Returns the tree's (possibly
   * moved) root and the copy's.
   */
  async copyRoot(root: RootLocation, newOwner: bigint): Promise<{ root: RootLocation; copy: RootLocation; copyNode: BlockView }> {
    return this.exclusive(async () => {
      this.checkGeneration();
      const v = await this.view(root.bytenr, root.level, root.generation);
      const node = await this.writable(v, root.objectid, undefined, undefined);
      const bytenr = await this.store.allocBlock(newOwner, node.level);
      const copy = CowNode.fromBlock(node, bytenr, newOwner, this.store.generation);
      this.dirty.set(bytenr, copy);
      return {
        root: { objectid: root.objectid, bytenr: node.bytenr, level: node.level, generation: node.generation },
        copy: { objectid: newOwner, bytenr, level: copy.level, generation: copy.generation },
        copyNode: copy,
      };
    });
  }

  /**
   * Encodes every changed block into the store (writeDirty) and forgets them;
   * later changes in the same transaction re-read them and change them in
   * place. Call before the transaction commits. Returns the blocks written.
   */
  flush(): number {
    this.checkGeneration();
    const s = this.store;
    for (const node of this.dirty.values()) s.writeDirty(node.bytenr, node.encode(s.nodesize, s.csumType, s.fsid, s.chunkTreeUuid));
    const n = this.dirty.size;
    this.dirty.clear();
    return n;
  }

  private async insertOne(root: RootLocation, k: Key, data: Buffer): Promise<RootLocation> {
    const op = await this.writePath(root, k, 'EEXIST');
    const leaf = op.nodes[0]!;
    const slot = op.slots[0]! + 1;
    leaf.items.splice(slot, 0, { key: k, data });
    if (slot === 0) setParentKey(op, 0, op.slots[1] ?? 0, k);
    if (leaf.overfull(this.store.nodesize)) await fixLeafOverflow(op, slot);
    await fixNodesUp(op);
    return this.rootOf(op);
  }

  private async deleteOne(root: RootLocation, k: Key): Promise<RootLocation> {
    const op = await this.writePath(root, k, 'ENOENT');
    const leaf = op.nodes[0]!;
    const slot = op.slots[0]!;
    leaf.items.splice(slot, 1);
    if (slot === 0 && leaf.items.length > 0) setParentKey(op, 0, op.slots[1] ?? 0, leaf.keyAt(0));
    await fixLeafShrink(op);
    await fixNodesUp(op);
    return this.rootOf(op);
  }

  /**
   * The search with a COW path: descends read-only, checks the key is there
   * (`ENOENT` wanted) or not (`EEXIST`), and only then makes every block on
   * the path writable, top down. The leaf slot is the item's (or the last
   * key before it, -1 if none).
   */
  private async writePath(root: RootLocation, k: Key, fail: 'ENOENT' | 'EEXIST'): Promise<TreeOp> {
    this.checkGeneration();
    const { views, slots } = await this.descend(root, k);
    const leafSlot = slots[0]!;
    const found = leafSlot >= 0 && keyEquals(views[0]!.keyAt(leafSlot), k);
    if (found === (fail === 'EEXIST')) {
      throw new BtrfsError(fail, found ? `item ${formatKey(k)} already exists` : `no item ${formatKey(k)}`, { tree: root.objectid, key: k });
    }
    const op = this.newOp(root, slots);
    for (let level = views.length - 1; level >= 0; level--) {
      const parent = op.nodes[level + 1];
      const node = await this.writable(views[level]!, root.objectid, parent, slots[level + 1]);
      op.nodes[level] = node;
    }
    const top = op.nodes[op.nodes.length - 1]!;
    op.root = { bytenr: top.bytenr, level: top.level, generation: top.generation };
    return op;
  }

  private newOp(root: RootLocation, slots: number[]): TreeOp {
    const tree = this;
    const owner = root.objectid;
    return {
      nodesize: this.store.nodesize,
      owner,
      generation: this.store.generation,
      nodes: [],
      slots,
      root: { bytenr: root.bytenr, level: root.level, generation: root.generation },
      readChild: (parent, slot) => {
        const p = parent.ptrs[slot]!;
        return tree.view(p.blockptr, parent.level - 1, p.generation);
      },
      cowChild: async (parent, slot) => {
        const p = parent.ptrs[slot]!;
        return tree.writable(await tree.view(p.blockptr, parent.level - 1, p.generation), owner, parent, slot);
      },
      newBlock: async (level) => {
        const node = new CowNode(await tree.store.allocBlock(owner, level), level, owner, tree.store.generation);
        tree.dirty.set(node.bytenr, node);
        return node;
      },
      count: (event) => { tree.stats[event] = (tree.stats[event] ?? 0) + 1; },
      release: async (v) => {
        // a block of this transaction is only ours; an older one may be shared with snapshots
        if (tree.dirty.delete(v.bytenr)) tree.store.freeBlock(v.bytenr, owner, v.level);
        else await tree.store.dropBlock(v, owner);
      },
    };
  }

  private rootOf(op: TreeOp): RootLocation {
    return { objectid: op.owner, ...op.root };
  }

  /** Dirty blocks first, then the store (verified against the parent's level and generation). */
  private async view(bytenr: bigint, level: number, generation?: bigint): Promise<BlockView> {
    const d = this.dirty.get(bytenr);
    if (d) {
      if (d.level !== level) throw new BtrfsError('EUCLEAN', `bad tree block level, want ${level} have ${d.level}`, { block: bytenr });
      return d;
    }
    return this.store.read(bytenr, level, generation);
  }

  /**
   * The block made writable: itself if dirty, adopted in place if written
   * earlier in this transaction, else copied to a new bytenr (the old one
   * freed). The parent's pointer follows the block.
   */
  private async writable(v: BlockView, owner: bigint, parent: CowNode | undefined, slot: number | undefined): Promise<CowNode> {
    let node = this.dirty.get(v.bytenr);
    if (!node) {
      const gen = this.store.generation;
      if (v.generation === gen) {
        node = CowNode.fromBlock(v, v.bytenr, owner, gen);
      } else {
        node = CowNode.fromBlock(v, await this.store.cowBlock(v, owner), owner, gen);
      }
      this.dirty.set(node.bytenr, node);
    }
    if (parent && slot !== undefined) {
      const p = parent.ptrs[slot]!;
      p.blockptr = node.bytenr;
      p.generation = node.generation;
    }
    return node;
  }

  private async descend(root: RootLocation, k: Key): Promise<ReadPath> {
    const views: BlockView[] = [];
    const slots: number[] = [];
    let v = await this.view(root.bytenr, root.level, root.generation);
    for (;;) {
      views[v.level] = v;
      let { slot } = v.search(k);
      if (v.level === 0) {
        slots[0] = slot;
        return { views, slots };
      }
      if (slot < 0) slot = 0;
      slots[v.level] = slot;
      const p = v.ptrs[slot]!;
      v = await this.view(p.blockptr, v.level - 1, p.generation);
    }
  }

  private checkGeneration(): void {
    if (this.dirty.size > 0 && this.dirtyGeneration !== this.store.generation) {
      throw new BtrfsError('EINVAL', `generation moved from ${this.dirtyGeneration} to ${this.store.generation} with ${this.dirty.size} blocks not flushed`);
    }
    this.dirtyGeneration = this.store.generation;
  }

  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.busy) throw new BtrfsError('EBUSY', 'another operation on this tree is running');
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
    }
  }
}

/**
 * The first key past the leaf a path leads to (the next pointer key at the
 * lowest level that has one), or null for the rightmost leaf.
 */
function upperBound(views: readonly BlockView[], slots: readonly number[]): Key | null {
  for (let lvl = 1; lvl < views.length; lvl++) {
    const v = views[lvl]!;
    const s = slots[lvl]!;
    if (s + 1 < v.nritems) return v.keyAt(s + 1);
  }
  return null;
}
