/**
 * Tree traversal for the check passes: depth first, in key order, through
 * the verifying block reader, with every node's children requested at once
 * so that the device works on many reads while the walk waits for the
 * first. Items are handed to synchronous callbacks, leaf by leaf: a check
 * visits every item of the filesystem, and an await per item would cost
 * more than the work done on it.
 */
import type { Key } from '../format/key.js';
import { addrKey, fromBig, type AddrKey, type U64 } from './u64.js';
import type { TreeBlock } from '../format/tree-block.js';
import type { BlockExpectation } from '../verify/tree-checker.js';
import type { RootLocation } from '../tree/search.js';
import type { CheckContext } from './context.js';

interface Pending { exp: BlockExpectation; block: Promise<TreeBlock> }

const inflight: WeakMap<CheckContext, Map<bigint, Pending>> = new WeakMap();

const sameExp = (a: BlockExpectation, b: BlockExpectation) =>
  a.level === b.level && a.generation === b.generation && a.owner === b.owner
  && (a.firstKey === b.firstKey || (a.firstKey !== undefined && b.firstKey !== undefined
    && a.firstKey.objectid === b.firstKey.objectid && a.firstKey.type === b.firstKey.type && a.firstKey.offset === b.firstKey.offset));

/** Starts reading these blocks; a later readBlock with the same expectations takes the result. */
export function prefetch(ctx: CheckContext, exps: BlockExpectation[]): void {
  let m = inflight.get(ctx);
  if (!m) inflight.set(ctx, m = new Map());
  for (const exp of exps) {
    if (m.has(exp.bytenr)) continue;
    const block = ctx.info.reader.read(exp);
    // Failures surface when the block is actually asked for.
    block.catch(() => undefined);
    m.set(exp.bytenr, { exp, block });
  }
}

/** A verified block: the prefetched read when it was made with the same expectations, else a new one. */
export function readBlock(ctx: CheckContext, exp: BlockExpectation): Promise<TreeBlock> {
  const m = inflight.get(ctx);
  const p = m?.get(exp.bytenr);
  if (p) {
    m!.delete(exp.bytenr);
    if (sameExp(p.exp, exp)) return p.block;
  }
  return ctx.info.reader.read(exp);
}

/** The expectations a node's pointers give its children. */
export function childExps(node: TreeBlock, owner: bigint): BlockExpectation[] {
  return node.ptrs.map((p) => ({ bytenr: p.blockptr, level: node.level - 1, generation: p.generation, firstKey: p.key, owner }));
}

/**
 * Calls `fn` on every leaf of the tree, in key order. A block that cannot be
 * read ends the walk with its error (callers report it).
 */
export async function forEachLeaf(ctx: CheckContext, loc: RootLocation, fn: (leaf: TreeBlock) => void): Promise<void> {
  const visit = async (exp: BlockExpectation): Promise<void> => {
    const b = await readBlock(ctx, exp);
    if (b.isLeaf) { fn(b); return; }
    const kids = childExps(b, loc.objectid);
    prefetch(ctx, kids);
    for (const k of kids) await visit(k);
  };
  await visit({ bytenr: loc.bytenr, level: loc.level, generation: loc.generation, owner: loc.objectid });
}

/** Calls `fn` on every item of the tree, in key order (see forEachLeaf). */
export async function forEachItem(ctx: CheckContext, loc: RootLocation, fn: (key: Key, data: Buffer, block: TreeBlock, slot: number) => void): Promise<void> {
  await forEachLeaf(ctx, loc, (leaf) => {
    for (let i = 0; i < leaf.nritems; i++) fn(leaf.itemKeyAt(i), leaf.itemDataAt(i), leaf, i);
  });
}

/** A leaf of a tree: where it is, what its parent expects of it, and the objectid of its first key. */
/** A leaf of a tree: where it is (and that as a map key), what its parent expects of it, and the objectid of its first key. */
export interface LeafPos { bytenr: bigint; key: AddrKey; first: U64; exp: { bytenr: bigint; level: number; generation: bigint; firstKey: Key; owner: bigint } }

/** A tree's leaves in key order, from its nodes alone (no leaf is read). */
export async function leafOrder(ctx: CheckContext, loc: { objectid: bigint; bytenr: bigint; level: number; generation: bigint }): Promise<LeafPos[]> {
  const out: LeafPos[] = [];
  if (loc.level === 0) {
    const b = await readBlock(ctx, { bytenr: loc.bytenr, level: 0, generation: loc.generation, owner: loc.objectid });
    const first = b.firstKey();
    out.push({ bytenr: b.bytenr, key: addrKey(fromBig(b.bytenr)), first: first ? fromBig(first.objectid) : 0, exp: { bytenr: b.bytenr, level: 0, generation: loc.generation, firstKey: first ?? { objectid: 0n, type: 0, offset: 0n }, owner: loc.objectid } });
    return out;
  }
  const visit = async (exp: BlockExpectation): Promise<void> => {
    const b = await readBlock(ctx, exp);
    if (b.level === 1) {
      for (const p of b.ptrs) {
        out.push({ bytenr: p.blockptr, key: addrKey(fromBig(p.blockptr)), first: fromBig(p.key.objectid), exp: { bytenr: p.blockptr, level: 0, generation: p.generation, firstKey: p.key, owner: loc.objectid } });
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
