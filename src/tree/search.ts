/**
 * Read-only tree walks: exact lookup, "last item at or before a key" and
 * ordered range iteration. Every walk starts from a RootLocation (what a root
 * item or the superblock says about a tree's root block).
 */
import { corrupt } from '../util/errors.js';
import { compareKeys, KEY_MAX, KEY_MIN, type Key } from '../format/key.js';
import type { TreeBlock } from '../format/tree-block.js';
import type { BlockReader } from './block-reader.js';

export interface RootLocation {
  /** tree objectid (owner), for messages and checks */
  objectid: bigint;
  bytenr: bigint;
  level: number;
  generation: bigint;
}

export interface TreeItem {
  key: Key;
  data: Buffer;
  block: TreeBlock;
  slot: number;
}

interface PathEntry { block: TreeBlock; slot: number }

/**
 * Descends to the leaf where `k` is or would be, recording the slot taken at
 * each level. The leaf entry's slot is the last item <= k (-1 if none).
 */
async function descend(reader: BlockReader, root: RootLocation, k: Key): Promise<PathEntry[]> {
  const path: PathEntry[] = [];
  let exp = { bytenr: root.bytenr, level: root.level, generation: root.generation, owner: root.objectid } as Parameters<BlockReader['read']>[0];
  for (;;) {
    const block = await reader.read(exp);
    if (block.isLeaf) {
      path.push({ block, slot: block.search(k).slot });
      return path;
    }
    let { slot } = block.search(k);
    if (slot < 0) slot = 0;
    path.push({ block, slot });
    const p = block.ptrs[slot]!;
    if (block.level === 0) throw corrupt('descend past a leaf');
    exp = { bytenr: p.blockptr, level: block.level - 1, generation: p.generation, firstKey: p.key, owner: root.objectid };
  }
}

/** Moves the path to the next leaf; false at the end of the tree. */
async function nextLeaf(reader: BlockReader, root: RootLocation, path: PathEntry[]): Promise<boolean> {
  let lvl = path.length - 2;
  while (lvl >= 0 && path[lvl]!.slot + 1 >= path[lvl]!.block.nritems) lvl--;
  if (lvl < 0) return false;
  path[lvl]!.slot++;
  path.length = lvl + 1;
  for (;;) {
    const parent = path[path.length - 1]!;
    const p = parent.block.ptrs[parent.slot]!;
    const block = await reader.read({ bytenr: p.blockptr, level: parent.block.level - 1, generation: p.generation, firstKey: p.key, owner: root.objectid });
    if (block.isLeaf) {
      path.push({ block, slot: 0 });
      return true;
    }
    path.push({ block, slot: 0 });
  }
}

/**
 * Items with min <= key <= max, in key order. The generator reads blocks
 * lazily, so breaking out early costs nothing more.
 */
export async function* iterItems(reader: BlockReader, root: RootLocation, min: Key = KEY_MIN, max: Key = KEY_MAX): AsyncGenerator<TreeItem> {
  const path = await descend(reader, root, min);
  const leaf = path[path.length - 1]!;
  // descend() leaves the slot at the last key <= min; start at the first key >= min.
  if (leaf.slot < 0 || compareKeys(leaf.block.keyAt(leaf.slot), min) < 0) leaf.slot++;
  for (;;) {
    const cur = path[path.length - 1]!;
    while (cur.slot < cur.block.nritems) {
      const it = cur.block.items[cur.slot]!;
      if (compareKeys(it.key, max) > 0) return;
      yield { key: it.key, data: it.data, block: cur.block, slot: cur.slot };
      cur.slot++;
    }
    if (!(await nextLeaf(reader, root, path))) return;
  }
}

/** The item with exactly this key, or undefined. */
export async function lookupItem(reader: BlockReader, root: RootLocation, k: Key): Promise<TreeItem | undefined> {
  const path = await descend(reader, root, k);
  const leaf = path[path.length - 1]!;
  if (leaf.slot < 0) return undefined;
  const it = leaf.block.items[leaf.slot]!;
  if (compareKeys(it.key, k) !== 0) return undefined;
  return { key: it.key, data: it.data, block: leaf.block, slot: leaf.slot };
}

/** The last item with min <= key <= max, or undefined. */
export async function findLastItem(reader: BlockReader, root: RootLocation, min: Key, max: Key): Promise<TreeItem | undefined> {
  const path = await descend(reader, root, max);
  const leaf = path[path.length - 1]!;
  // slot < 0 only when every key of the tree sorts after max: descent takes slot 0
  // wherever the search found nothing smaller, and each child's first key equals its pointer's.
  const { slot, block } = leaf;
  if (slot < 0) return undefined;
  const it = block.items[slot]!;
  if (compareKeys(it.key, min) < 0) return undefined;
  return { key: it.key, data: it.data, block, slot };
}

/** Calls fn on every block of the tree (pre-order), for dump-tree and checks. */
export async function walkBlocks(
  reader: BlockReader,
  root: RootLocation,
  fn: (block: TreeBlock) => void | Promise<void>,
): Promise<void> {
  const visit = async (bytenr: bigint, level: number, generation: bigint, firstKey?: Key): Promise<void> => {
    const block = await reader.read({ bytenr, level, generation, firstKey, owner: root.objectid });
    await fn(block);
    if (!block.isLeaf) {
      for (const p of block.ptrs) await visit(p.blockptr, block.level - 1, p.generation, p.key);
    }
  };
  await visit(root.bytenr, root.level, root.generation);
}
