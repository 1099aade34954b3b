/**
 * Dropping a deleted subvolume's tree (the kernel's btrfs_drop_snapshot),
 * in bounded steps that a crash or an unmount can interrupt.
 *
 * Every block the tree references alone (one reference) is freed with the
 * data references of its leaves; a block shared with another tree only
 * loses this tree's reference. A shared block this tree created still
 * passes its children this tree's references (TREE_BLOCK_REF of a tree
 * about to vanish), so before letting it go its subtree is turned over to
 * parent-based references, as the kernel's UPDATE_BACKREF stage does.
 *
 * Progress is the kernel's: the root item's drop_progress is the key of the
 * next slot of the root node still to drop (drop_level = the root's level);
 * every child before it is gone. The kernel resumes from the same record.
 */
import { BtrfsError } from '../util/errors.js';
import { EXTENT_FLAG } from '../format/constants.js';
import type { Key } from '../format/key.js';
import type { TreeBlock } from '../format/tree-block.js';
import type { MetaBackref } from '../extent/delayed-refs.js';
import type { Transaction } from '../transaction/transaction.js';

export interface DropStep {
  done: boolean;
  /** tree blocks whose last reference went in this step */
  freed: number;
}

const ZERO_KEY: Key = { objectid: 0n, type: 0, offset: 0n };

/**
 * Drops children of dying tree `id`'s root until about `budget` blocks
 * are freed; at the end the root block goes too and `done` is set (the
 * caller then deletes the root item and orphan item). The transaction
 * must have no unflushed changes to this tree.
 */
export async function dropTreeStep(txn: Transaction, id: bigint, budget: number): Promise<DropStep> {
  txn.tree.flush();
  const { item } = await txn.rootItem(id);
  if (item.refs !== 0) throw new BtrfsError('EINVAL', `tree ${id} is still referenced; only deleted subvolumes are dropped`, { tree: id });
  const root = await txn.read(item.bytenr, item.level, item.generation);
  const state = { freed: 0 };
  if (root.level === 0) {
    await dropBlock(txn, id, root, { root: id }, state);
    return { done: true, freed: state.freed };
  }
  let slot = 0;
  if (item.drop_progress.objectid !== 0n || item.drop_progress.type !== 0) {
    if (item.drop_level !== root.level) {
      throw new BtrfsError('ENOTSUP', `tree ${id}: resuming a drop at level ${item.drop_level} below its root (level ${root.level}) is not supported`, { tree: id });
    }
    slot = root.search(item.drop_progress).slot;
    if (slot < 0) slot = 0;
  }
  const rootInfo = await txn.extentInfo(root, id);
  const full = (rootInfo.flags & EXTENT_FLAG.FULL_BACKREF) !== 0n;
  for (; slot < root.nritems; slot++) {
    if (state.freed >= budget) {
      await txn.setRootItem(id, { drop_progress: root.ptrs[slot]!.key, drop_level: root.level });
      return { done: false, freed: state.freed };
    }
    const p = root.ptrs[slot]!;
    const child = await txn.read(p.blockptr, root.level - 1, p.generation);
    await dropBlock(txn, id, child, full ? { parent: root.bytenr } : { root: id }, state);
  }
  await dropRootBlock(txn, id, root, state);
  await txn.setRootItem(id, { drop_progress: ZERO_KEY, drop_level: 0 });
  return { done: true, freed: state.freed };
}

async function dropRootBlock(txn: Transaction, id: bigint, root: TreeBlock, state: { freed: number }): Promise<void> {
  const info = await txn.extentInfo(root, id);
  if (info.refs > 1n) {
    if (root.owner === id && !(info.flags & EXTENT_FLAG.FULL_BACKREF)) await turnOverToParents(txn, id, root);
  } else {
    state.freed++;
  }
  txn.refs.treeRef(root.bytenr, root.level, id, { root: id }, -1);
}

/** Drops tree `id`'s reference `ref` to block `b`, and everything below that only it holds. */
async function dropBlock(txn: Transaction, id: bigint, b: TreeBlock, ref: MetaBackref, state: { freed: number }): Promise<void> {
  const info = await txn.extentInfo(b, id);
  const full = (info.flags & EXTENT_FLAG.FULL_BACKREF) !== 0n;
  if (info.refs > 1n) {
    if (b.owner === id && !full) await turnOverToParents(txn, id, b);
    txn.refs.treeRef(b.bytenr, b.level, id, ref, -1);
    return;
  }
  if (b.level === 0) {
    txn.incRef(b, id, full, -1);
  } else {
    for (const p of b.ptrs) {
      const child = await txn.read(p.blockptr, b.level - 1, p.generation);
      await dropBlock(txn, id, child, full ? { parent: b.bytenr } : { root: id }, state);
    }
  }
  txn.refs.treeRef(b.bytenr, b.level, id, ref, -1);
  state.freed++;
}

/**
 * Block `b` of tree `id`, shared with another tree, refers to its children
 * by `id`: make those references parent-based (and so on down through the
 * blocks `id` created), so they outlive `id`.
 */
async function turnOverToParents(txn: Transaction, id: bigint, b: TreeBlock): Promise<void> {
  txn.incRef(b, id, true, 1);
  txn.incRef(b, id, false, -1);
  txn.refs.setTreeBlockFlags(b.bytenr, b.level, b.owner, EXTENT_FLAG.FULL_BACKREF);
  if (b.level === 0) return;
  for (const p of b.ptrs) {
    const child = await txn.read(p.blockptr, b.level - 1, p.generation);
    if (child.owner !== id) continue;
    const info = await txn.extentInfo(child, id);
    if (!(info.flags & EXTENT_FLAG.FULL_BACKREF)) await turnOverToParents(txn, id, child);
  }
}
