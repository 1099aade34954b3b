/**
 * Keeping the COW B-tree in shape after one leaf changed: pushing items to a
 * sibling, splitting leaves (in two, or in three around one big item) and
 * nodes, growing and shrinking the root, merging underfull leaves and nodes,
 * and carrying a changed first key up to the parents.
 *
 * Every change here is made on a path whose blocks are already writable (in
 * the transaction's dirty set); siblings are made writable (COWed) only when
 * they receive items, and are released (freed) without a copy when they are
 * emptied into a neighbour.
 *
 * Shape invariants, checked by the tests after every batch:
 *  - a node that is not the root holds at least NODE_MIN = floor(maxPtrs/4)
 *    pointers; a root node holds at least 2 (one child means the child is
 *    the root);
 *  - leaves: btrfs's own rule is "try to merge a leaf under a third full";
 *    with items of any size a hard minimum cannot hold (a 0.2-full leaf
 *    between two leaves of one 0.9-sized item each cannot go anywhere), so
 *    the rule kept is: of two adjacent leaves under the same parent, if
 *    either uses less than LEAF_MIN = floor(leafDataSize/4) bytes, the two
 *    together do not fit in one leaf. Hence no empty leaf except an empty
 *    root, and with small items every non-root leaf is at least 1/4 full
 *    except where a neighbour is too full to take it.
 */
import { BtrfsError } from '../util/errors.js';
import { ITEM_SIZE } from '../format/constants.js';
import type { Key } from '../format/key.js';
import { leafDataSize, maxNodePtrs } from '../format/tree-block-encode.js';
import { CowNode, leafUsed, type BlockView } from './cow-node.js';

/** One modifying operation's view of the tree: the writable path and how to reach siblings. */
export interface TreeOp {
  readonly nodesize: number;
  readonly owner: bigint;
  /** nodes[level] on the path from the root (last) down to the leaf (0) */
  nodes: CowNode[];
  /** slots[level]: slot taken in nodes[level]; slots[level + 1] is nodes[level]'s slot in its parent */
  slots: number[];
  /** the current root; changes when the root is COWed, grown or shrunk */
  root: { bytenr: bigint; level: number; generation: bigint };
  readChild(parent: CowNode, slot: number): Promise<BlockView>;
  /** the child made writable, its pointer in parent updated */
  cowChild(parent: CowNode, slot: number): Promise<CowNode>;
  newBlock(level: number): Promise<CowNode>;
  /** the block is no longer referenced by the tree */
  release(v: BlockView): Promise<void>;
  readonly generation: bigint;
  /** counts each structural change by name (BalanceEvent), for tests and tuning */
  count(event: BalanceEvent): void;
}

export type BalanceEvent =
  | 'root-grow' | 'root-shrink' | 'leaf-push-left' | 'leaf-push-right' | 'leaf-split' | 'leaf-split-3'
  | 'leaf-merge' | 'junction-merge' | 'node-split' | 'node-merge' | 'node-redistribute';

export function leafMinUsed(nodesize: number): number { return Math.floor(leafDataSize(nodesize) / 4); }
export function nodeMinPtrs(nodesize: number): number { return Math.floor(maxNodePtrs(nodesize) / 4); }

const copyItem = (it: { key: Key; data: Buffer }) => ({ key: it.key, data: it.data });
const itemBytes = (it: { data: Buffer }): number => ITEM_SIZE + it.data.length;

function isRoot(op: TreeOp, level: number): boolean { return level === op.nodes.length - 1; }

/**
 * Sets the key of nodes[childLevel]'s pointer at `slot` in its parent and,
 * while that pointer is the parent's first, in the grandparents too.
 */
export function setParentKey(op: TreeOp, childLevel: number, slot: number, k: Key): void {
  for (let lvl = childLevel + 1; lvl < op.nodes.length; lvl++) {
    op.nodes[lvl]!.ptrs[slot]!.key = k;
    if (slot !== 0) return;
    slot = op.slots[lvl + 1]!;
  }
}

/** Two leaves belong together when one is underfull and both fit in one. */
function shouldMerge(a: number, b: number, nodesize: number): boolean {
  const min = leafMinUsed(nodesize);
  return (a < min || b < min) && a + b <= leafDataSize(nodesize);
}

/** A new root one level up whose only child is the current root. */
async function growRoot(op: TreeOp): Promise<void> {
  const top = op.nodes.length - 1;
  const old = op.nodes[top]!;
  if (top + 1 >= 8) throw new BtrfsError('EOVERFLOW', `tree would exceed the maximum level`, { tree: op.owner });
  const root = await op.newBlock(top + 1);
  root.ptrs.push({ key: old.keyAt(0), blockptr: old.bytenr, generation: old.generation });
  op.nodes.push(root);
  op.slots[top + 1] = 0;
  op.root = { bytenr: root.bytenr, level: root.level, generation: root.generation };
  op.count('root-grow');
}

/**
 * Merges the leaf at `slot` of `parent` with same-parent neighbours until no
 * pair around it breaks the leaf rule. The leaf must be writable.
 */
async function settleLeaf(op: TreeOp, parent: CowNode, slot: number): Promise<void> {
  let leaf = (await op.cowChild(parent, slot));
  for (;;) {
    const used = leaf.used();
    if (slot > 0) {
      const left = await op.readChild(parent, slot - 1);
      if (shouldMerge(leafUsed(left), used, op.nodesize)) {
        const into = await op.cowChild(parent, slot - 1);
        into.items.push(...leaf.items);
        parent.ptrs.splice(slot, 1);
        await op.release(leaf);
        op.count('leaf-merge');
        leaf = into;
        slot--;
        continue;
      }
    }
    if (slot + 1 < parent.ptrs.length) {
      const right = await op.readChild(parent, slot + 1);
      if (shouldMerge(used, leafUsed(right), op.nodesize)) {
        const wasEmpty = leaf.items.length === 0;
        leaf.items.push(...right.items.map(copyItem));
        parent.ptrs.splice(slot + 1, 1);
        await op.release(right);
        op.count('leaf-merge');
        if (wasEmpty && leaf.items.length) setParentKeyOf(op, parent, slot, leaf.keyAt(0));
        continue;
      }
    }
    return;
  }
}

/** setParentKey for a child of `parent`, which is nodes[1] whenever a propagation is possible. */
function setParentKeyOf(op: TreeOp, parent: CowNode, slot: number, k: Key): void {
  if (op.nodes[parent.level] === parent) setParentKey(op, parent.level - 1, slot, k);
  else parent.ptrs[slot]!.key = k;
}

/**
 * Moves the fewest leading items of the overfull leaf into its left sibling
 * that make the leaf fit; false (nothing moved) if the sibling has no room.
 */
async function pushLeafLeft(op: TreeOp, parent: CowNode, slot: number, leaf: CowNode): Promise<boolean> {
  if (slot === 0) return false;
  const cap = leafDataSize(op.nodesize);
  const need = leaf.used() - cap;
  const left = await op.readChild(parent, slot - 1);
  const room = cap - leafUsed(left);
  let moved = 0;
  let k = 0;
  while (moved < need && k < leaf.items.length - 1) moved += itemBytes(leaf.items[k++]!);
  if (moved < need || moved > room) return false;
  const into = await op.cowChild(parent, slot - 1);
  into.items.push(...leaf.items.splice(0, k));
  op.count('leaf-push-left');
  parent.ptrs[slot]!.key = leaf.keyAt(0);
  return true;
}

/** The mirror of pushLeafLeft: the fewest trailing items into the right sibling. */
async function pushLeafRight(op: TreeOp, parent: CowNode, slot: number, leaf: CowNode): Promise<boolean> {
  if (slot + 1 >= parent.ptrs.length) return false;
  const cap = leafDataSize(op.nodesize);
  const need = leaf.used() - cap;
  const right = await op.readChild(parent, slot + 1);
  const room = cap - leafUsed(right);
  let moved = 0;
  let k = 0;
  while (moved < need && k < leaf.items.length - 1) moved += itemBytes(leaf.items[leaf.items.length - 1 - k++]!);
  if (moved < need || moved > room) return false;
  const into = await op.cowChild(parent, slot + 1);
  into.items.unshift(...leaf.items.splice(leaf.items.length - k, k));
  op.count('leaf-push-right');
  parent.ptrs[slot + 1]!.key = into.keyAt(0);
  return true;
}

/**
 * Where to cut an overfull leaf: item counts of each piece, 2 pieces when any
 * cut leaves both sides fitting, else 3 with the changed item alone in the
 * middle (every other item fitted before it grew or arrived).
 * An append (changed item last) cuts just before it, so sequential inserts
 * leave full leaves behind, as btrfs does; likewise a prepend.
 */
export function chooseLeafSplit(sizes: readonly number[], changed: number, cap: number): number[] {
  const n = sizes.length;
  const total = sizes.reduce((a, b) => a + b, 0);
  let prefix = 0;
  let best = -1;
  let bestSkew = Infinity;
  const valid: boolean[] = [];
  for (let i = 1; i < n; i++) {
    prefix += sizes[i - 1]!;
    valid[i] = prefix <= cap && total - prefix <= cap;
    if (valid[i] && Math.abs(2 * prefix - total) < bestSkew) { bestSkew = Math.abs(2 * prefix - total); best = i; }
  }
  if (changed === n - 1 && valid[n - 1]) return [n - 1, 1];
  if (changed === 0 && valid[1]) return [1, n - 1];
  if (best > 0) return [best, n - best];
  return [changed, 1, n - changed - 1].filter((c) => c > 0);
}

/** Resolves an overfull leaf (nodes[0]) after the item at `changed` was inserted or grown. */
export async function fixLeafOverflow(op: TreeOp, changed: number): Promise<void> {
  if (isRoot(op, 0)) await growRoot(op);
  const leaf = op.nodes[0]!;
  const parent = op.nodes[1]!;
  const slot = op.slots[1]!;
  if (await pushLeafLeft(op, parent, slot, leaf) || await pushLeafRight(op, parent, slot, leaf)) {
    await settleLeaf(op, parent, slot);
    return;
  }
  const cap = leafDataSize(op.nodesize);
  const pieces = chooseLeafSplit(leaf.items.map(itemBytes), changed, cap);
  const rest = leaf.items.splice(pieces[0]!);
  op.count(pieces.length === 3 ? 'leaf-split-3' : 'leaf-split');
  let at = slot;
  for (const count of pieces.slice(1)) {
    const piece = await op.newBlock(0);
    piece.items = rest.splice(0, count);
    parent.ptrs.splice(++at, 0, { key: piece.keyAt(0), blockptr: piece.bytenr, generation: piece.generation });
  }
  // Pieces only shrank from the whole, so only their outer neighbours can now
  // call for a merge; settle the last first so the slots before stay put.
  await settleLeaf(op, parent, at);
  await settleLeaf(op, parent, slot);
}

/** After the leaf nodes[0] shrank (or emptied): merges it with neighbours as the leaf rule asks. */
export async function fixLeafShrink(op: TreeOp): Promise<void> {
  if (isRoot(op, 0)) return;
  await settleLeaf(op, op.nodes[1]!, op.slots[1]!);
}

/**
 * Pointers moved into a level-1 node put two leaves side by side that had
 * different parents: merge them if the leaf rule asks. `j` is the slot of the
 * right one of the pair.
 */
async function settleJunction(op: TreeOp, node: CowNode, j: number): Promise<void> {
  if (node.level !== 1 || j <= 0 || j >= node.ptrs.length) return;
  const a = await op.readChild(node, j - 1);
  const b = await op.readChild(node, j);
  if (!shouldMerge(leafUsed(a), leafUsed(b), op.nodesize)) return;
  const into = await op.cowChild(node, j - 1);
  into.items.push(...b.items.map(copyItem));
  node.ptrs.splice(j, 1);
  await op.release(b);
  op.count('junction-merge');
}

/**
 * Splits an overfull node; biased like leaves: a node overflowing near its
 * end (appends) keeps 3/4 and gives the new right node the minimum, so
 * sequential inserts do not leave half-empty nodes behind.
 */
async function splitNode(op: TreeOp, level: number): Promise<void> {
  if (isRoot(op, level)) await growRoot(op);
  const node = op.nodes[level]!;
  const parent = op.nodes[level + 1]!;
  const slot = op.slots[level + 1]!;
  const n = node.ptrs.length;
  const min = nodeMinPtrs(op.nodesize);
  const hint = op.slots[level] ?? Math.floor(n / 2);
  let cut = Math.ceil(n / 2);
  if (hint >= n - min && n - min >= min) cut = n - min;
  else if (hint < min && n - min >= min) cut = min;
  const right = await op.newBlock(level);
  right.ptrs = node.ptrs.splice(cut);
  op.count('node-split');
  parent.ptrs.splice(slot + 1, 0, { key: right.keyAt(0), blockptr: right.bytenr, generation: right.generation });
}

/** Merges or evens out a non-root node under NODE_MIN with a sibling. */
async function fixUnderfullNode(op: TreeOp, level: number): Promise<void> {
  const node = op.nodes[level]!;
  const parent = op.nodes[level + 1]!;
  const slot = op.slots[level + 1]!;
  const max = maxNodePtrs(op.nodesize);
  if (slot > 0) {
    const left = await op.readChild(parent, slot - 1);
    const into = await op.cowChild(parent, slot - 1);
    if (left.nritems + node.ptrs.length <= max) {
      const j = into.ptrs.length;
      into.ptrs.push(...node.ptrs);
      parent.ptrs.splice(slot, 1);
      await op.release(node);
      op.count('node-merge');
      op.nodes[level] = into;
      op.slots[level + 1] = slot - 1;
      await settleJunction(op, into, j);
    } else {
      const k = Math.ceil((into.ptrs.length - node.ptrs.length) / 2);
      node.ptrs.unshift(...into.ptrs.splice(into.ptrs.length - k, k));
      op.count('node-redistribute');
      setParentKey(op, level, slot, node.keyAt(0));
      await settleJunction(op, node, k);
    }
    return;
  }
  if (slot + 1 >= parent.ptrs.length) return;
  const right = await op.readChild(parent, slot + 1);
  if (right.nritems + node.ptrs.length <= max) {
    const j = node.ptrs.length;
    node.ptrs.push(...right.ptrs.map((p) => ({ key: p.key, blockptr: p.blockptr, generation: p.generation })));
    parent.ptrs.splice(slot + 1, 1);
    await op.release(right);
    op.count('node-merge');
    await settleJunction(op, node, j);
  } else {
    const from = await op.cowChild(parent, slot + 1);
    const k = Math.ceil((from.ptrs.length - node.ptrs.length) / 2);
    const j = node.ptrs.length;
    node.ptrs.push(...from.ptrs.splice(0, k));
    op.count('node-redistribute');
    parent.ptrs[slot + 1]!.key = from.keyAt(0);
    await settleJunction(op, node, j);
  }
}

/**
 * Walks up from level 1 after a leaf-level change: splits overfull nodes
 * (growing the root if it is one), fixes underfull ones, and replaces a node
 * root with a single child by that child.
 */
export async function fixNodesUp(op: TreeOp): Promise<void> {
  const max = maxNodePtrs(op.nodesize);
  const min = nodeMinPtrs(op.nodesize);
  for (let level = 1; level < op.nodes.length; level++) {
    const node = op.nodes[level]!;
    if (node.ptrs.length > max) await splitNode(op, level);
    else if (!isRoot(op, level) && node.ptrs.length < min) await fixUnderfullNode(op, level);
  }
  // Shrink: a node root with one child hands the root to that child.
  while (op.nodes.length > 1) {
    const top = op.nodes.length - 1;
    const root = op.nodes[top]!;
    if (root.ptrs.length !== 1) break;
    const only = root.ptrs[0]!;
    await op.release(root);
    op.count('root-shrink');
    op.nodes.pop();
    // The child keeps its own generation: a clean child becomes the root as it is.
    op.root = { bytenr: only.blockptr, level: top - 1, generation: only.generation };
  }
}
