/**
 * Applying reference changes to the extent tree (the kernel's
 * run_delayed_refs, __btrfs_free_extent, alloc_reserved_*): one skinny
 * METADATA_ITEM per tree block, one EXTENT_ITEM per data extent, each with
 * its backrefs — inline while the item stays small, keyed items beyond —
 * and the extent's space released when its last reference goes.
 *
 * Inline refs are kept in the order the kernel's tree-checker demands: by
 * type ascending, and within a type by "sequence" (root or parent bytenr,
 * or the data ref hash) descending; a mount refuses anything else.
 */
import { corrupt } from '../util/errors.js';
import { KEY, OBJ, EXTENT_FLAG, ITEM_SIZE } from '../format/constants.js';
import { key, type Key } from '../format/key.js';
import { leafDataSize } from '../format/tree-block-encode.js';
import { decodeExtentItem, encodeExtentItem, extentItemSize, inlineRefSize, type ExtentItem, type InlineRef } from '../format/items/extent-item.js';
import { decodeExtentDataRef, encodeExtentDataRef, extentDataRefHash, encodeSharedDataRef, decodeSharedDataRef } from '../format/items/extent-ref.js';
import type { TreeItems } from '../tree/tree-store.js';
import type { DataRefChange, MetaRefChange, MetaBackref, DataBackref } from './delayed-refs.js';
import type { SpaceManager } from './block-groups.js';

export interface ExtentTreeContext {
  items: TreeItems;
  space: SpaceManager;
  generation: bigint;
  nodesize: number;
  /** removes the checksums of a freed data extent */
  deleteCsums: (start: bigint, end: bigint) => Promise<void>;
  /**
   * When set, items of new extents are collected here instead of inserted
   * one by one; the caller inserts them (one sorted batch) before anything
   * looks them up. Nothing in a round of reference changes does: new
   * extents are never looked up, only built.
   */
  newItems?: { key: Key; data: Buffer }[];
}

const E = OBJ.EXTENT_TREE;

/** The largest extent item the kernel builds before moving refs out to keyed items. */
export function maxExtentItemSize(nodesize: number): number {
  return (leafDataSize(nodesize) >> 4) - ITEM_SIZE;
}

function seqOf(r: InlineRef): bigint {
  switch (r.type) {
    case KEY.TREE_BLOCK_REF: return r.root;
    case KEY.EXTENT_OWNER_REF: return r.root;
    case KEY.SHARED_BLOCK_REF: return r.parent;
    case KEY.SHARED_DATA_REF: return r.parent;
    case KEY.EXTENT_DATA_REF: return extentDataRefHash(r.root, r.objectid, r.offset);
  }
}

export function sortInlineRefs(refs: InlineRef[]): void {
  refs.sort((a, b) => {
    // the simple-quota owner ref always comes first
    const ta = a.type === KEY.EXTENT_OWNER_REF ? -1 : a.type;
    const tb = b.type === KEY.EXTENT_OWNER_REF ? -1 : b.type;
    if (ta !== tb) return ta - tb;
    const sa = seqOf(a);
    const sb = seqOf(b);
    return sa > sb ? -1 : sa < sb ? 1 : 0;
  });
}

/** How one backref is found and stored, inline and keyed. */
interface RefCodec {
  what: string;
  matches(r: InlineRef): boolean;
  countOf(r: InlineRef): number;
  setCount(r: InlineRef, n: number): void;
  inline(count: number): InlineRef;
  /** keyed item candidates: the key to probe first and how to recognise and encode it */
  keyedKey(bytenr: bigint, probe: number): Key;
  keyedMatches(data: Buffer): boolean;
  keyedCount(data: Buffer): number;
  keyedEncode(count: number): Buffer;
  /** hash collisions are resolved by probing the next offsets (EXTENT_DATA_REF only) */
  probes: number;
}

function metaCodec(r: MetaBackref): RefCodec {
  if (r.parent !== undefined) {
    const parent = r.parent;
    return {
      what: `shared block ref (parent ${parent})`,
      matches: (x) => x.type === KEY.SHARED_BLOCK_REF && x.parent === parent,
      countOf: () => 1, setCount: () => undefined,
      inline: () => ({ type: KEY.SHARED_BLOCK_REF, parent }),
      keyedKey: (b) => key(b, KEY.SHARED_BLOCK_REF, parent),
      keyedMatches: () => true, keyedCount: () => 1, keyedEncode: () => Buffer.alloc(0), probes: 1,
    };
  }
  const root = r.root;
  return {
    what: `tree block ref (root ${root})`,
    matches: (x) => x.type === KEY.TREE_BLOCK_REF && x.root === root,
    countOf: () => 1, setCount: () => undefined,
    inline: () => ({ type: KEY.TREE_BLOCK_REF, root }),
    keyedKey: (b) => key(b, KEY.TREE_BLOCK_REF, root),
    keyedMatches: () => true, keyedCount: () => 1, keyedEncode: () => Buffer.alloc(0), probes: 1,
  };
}

function dataCodec(r: DataBackref): RefCodec {
  if ('parent' in r) {
    const parent = r.parent;
    return {
      what: `shared data ref (parent ${parent})`,
      matches: (x) => x.type === KEY.SHARED_DATA_REF && x.parent === parent,
      countOf: (x) => (x.type === KEY.SHARED_DATA_REF ? x.count : 0),
      setCount: (x, n) => { if (x.type === KEY.SHARED_DATA_REF) x.count = n; },
      inline: (count) => ({ type: KEY.SHARED_DATA_REF, parent, count }),
      keyedKey: (b) => key(b, KEY.SHARED_DATA_REF, parent),
      keyedMatches: () => true,
      keyedCount: (d) => decodeSharedDataRef(d).count,
      keyedEncode: (count) => encodeSharedDataRef({ count }),
      probes: 1,
    };
  }
  const { root, ino, offset } = r;
  const hash = extentDataRefHash(root, ino, offset);
  return {
    what: `data ref (root ${root} inode ${ino} offset ${offset})`,
    matches: (x) => x.type === KEY.EXTENT_DATA_REF && x.root === root && x.objectid === ino && x.offset === offset,
    countOf: (x) => (x.type === KEY.EXTENT_DATA_REF ? x.count : 0),
    setCount: (x, n) => { if (x.type === KEY.EXTENT_DATA_REF) x.count = n; },
    inline: (count) => ({ type: KEY.EXTENT_DATA_REF, root, objectid: ino, offset, count }),
    keyedKey: (b, probe) => key(b, KEY.EXTENT_DATA_REF, BigInt.asUintN(64, hash + BigInt(probe))),
    keyedMatches: (d) => { const x = decodeExtentDataRef(d); return x.root === root && x.objectid === ino && x.offset === offset; },
    keyedCount: (d) => decodeExtentDataRef(d).count,
    keyedEncode: (count) => encodeExtentDataRef({ root, objectid: ino, offset, count }),
    probes: 64,
  };
}

/**
 * Applies `delta` to one backref of the extent at `bytenr` (item in `item`,
 * which is edited; keyed refs edited in the tree). Returns the change in
 * the extent's total reference count.
 */
async function applyRef(ctx: ExtentTreeContext, bytenr: bigint, item: ExtentItem, isNew: boolean, c: RefCodec, delta: number): Promise<void> {
  const where = { tree: E, block: bytenr };
  const inl = item.inlineRefs.find((r) => c.matches(r));
  if (inl) {
    const n = c.countOf(inl) + delta;
    if (n < 0 || (n > 1 && inl.type !== KEY.EXTENT_DATA_REF && inl.type !== KEY.SHARED_DATA_REF)) throw corrupt(`extent ${bytenr}: ${c.what} would count ${n}`, where);
    if (n === 0) item.inlineRefs.splice(item.inlineRefs.indexOf(inl), 1);
    else c.setCount(inl, n);
    return;
  }
  if (!isNew) {
    for (let p = 0; p < c.probes; p++) {
      const k = c.keyedKey(bytenr, p);
      const raw = await ctx.items.lookup(E, k);
      if (!raw) break;
      if (!c.keyedMatches(raw)) continue;
      const n = c.keyedCount(raw) + delta;
      if (n < 0 || (n > 1 && c.probes === 1 && k.type !== KEY.SHARED_DATA_REF)) throw corrupt(`extent ${bytenr}: ${c.what} would count ${n}`, where);
      if (n === 0) await ctx.items.delete(E, k);
      else await ctx.items.update(E, k, c.keyedEncode(n));
      return;
    }
  }
  if (delta < 0) throw corrupt(`extent ${bytenr}: dropping ${c.what}, which does not exist`, where);
  const ref = c.inline(delta);
  if (extentItemSize(item) + inlineRefSize(ref.type) <= maxExtentItemSize(ctx.nodesize)) {
    item.inlineRefs.push(ref);
    return;
  }
  for (let p = 0; ; p++) {
    const k = c.keyedKey(bytenr, p);
    if (!(await ctx.items.lookup(E, k))) {
      await ctx.items.insert(E, k, c.keyedEncode(delta));
      return;
    }
    if (p >= c.probes) throw corrupt(`extent ${bytenr}: no free key for ${c.what}`, where);
  }
}

/** Deletes any keyed backref items of an extent whose item is gone. */
async function deleteKeyedRefs(ctx: ExtentTreeContext, bytenr: bigint): Promise<void> {
  const doomed: Key[] = [];
  for await (const it of ctx.items.iter(E, key(bytenr, KEY.TREE_BLOCK_REF, 0n), key(bytenr, KEY.SHARED_DATA_REF, 0xffff_ffff_ffff_ffffn))) {
    if (it.key.type >= KEY.TREE_BLOCK_REF && it.key.type <= KEY.SHARED_DATA_REF) doomed.push(it.key);
  }
  for (const k of doomed) await ctx.items.delete(E, k);
}

async function store(ctx: ExtentTreeContext, k: Key, raw: Buffer | undefined, item: ExtentItem): Promise<void> {
  sortInlineRefs(item.inlineRefs);
  const buf = encodeExtentItem(item);
  if (!raw && ctx.newItems) {
    ctx.newItems.push({ key: k, data: buf });
    return;
  }
  if (!raw) {
    await ctx.items.insert(E, k, buf);
    return;
  }
  if (buf.length !== raw.length) await ctx.items.resize(E, k, buf.length);
  await ctx.items.update(E, k, buf);
}

export async function applyMetaRef(ctx: ExtentTreeContext, bytenr: bigint, m: MetaRefChange): Promise<void> {
  const ns = BigInt(ctx.nodesize);
  let total = 0;
  for (const r of m.refs.values()) total += r.delta;
  let k: Key = key(bytenr, KEY.METADATA_ITEM, BigInt(m.level));
  let raw: Buffer | undefined;
  let item: ExtentItem;
  if (m.isNew) {
    if (total === 0 && [...m.refs.values()].every((r) => r.delta === 0)) {
      await ctx.space.release(bytenr, ns);
      return;
    }
    item = { refs: 0n, generation: ctx.generation, flags: EXTENT_FLAG.TREE_BLOCK, inlineRefs: [] };
  } else {
    raw = await ctx.items.lookup(E, k);
    let skinny = true;
    if (!raw) {
      k = key(bytenr, KEY.EXTENT_ITEM, ns);
      raw = await ctx.items.lookup(E, k);
      skinny = false;
    }
    if (!raw) throw corrupt(`tree block ${bytenr} of tree ${m.owner}: no extent item`, { tree: E, block: bytenr });
    item = decodeExtentItem(raw, { skinny });
  }
  for (const r of m.refs.values()) {
    if (r.delta === 0) continue;
    await applyRef(ctx, bytenr, item, m.isNew, metaCodec(r), r.delta);
    item.refs += BigInt(r.delta);
  }
  item.flags |= m.setFlags;
  if (item.refs < 0n) throw corrupt(`tree block ${bytenr}: reference count below zero`, { tree: E, block: bytenr });
  if (item.refs === 0n) {
    if (raw) await ctx.items.delete(E, k);
    if (!m.isNew) await deleteKeyedRefs(ctx, bytenr);
    await ctx.space.release(bytenr, ns);
    return;
  }
  await store(ctx, k, raw, item);
}

export async function applyDataRefs(ctx: ExtentTreeContext, bytenr: bigint, d: DataRefChange): Promise<void> {
  const k = key(bytenr, KEY.EXTENT_ITEM, d.numBytes);
  let raw: Buffer | undefined;
  let item: ExtentItem;
  if (d.isNew) {
    item = { refs: 0n, generation: ctx.generation, flags: EXTENT_FLAG.DATA, inlineRefs: [] };
  } else {
    raw = await ctx.items.lookup(E, k);
    if (!raw) throw corrupt(`data extent ${bytenr}+${d.numBytes} has no extent item`, { tree: E, block: bytenr, key: k });
    item = decodeExtentItem(raw);
  }
  for (const r of d.refs.values()) {
    if (r.delta === 0) continue;
    await applyRef(ctx, bytenr, item, d.isNew, dataCodec(r), r.delta);
    item.refs += BigInt(r.delta);
  }
  if (item.refs < 0n) throw corrupt(`data extent ${bytenr}: reference count below zero`, { tree: E, block: bytenr });
  if (item.refs === 0n) {
    if (raw) await ctx.items.delete(E, k);
    if (!d.isNew) await deleteKeyedRefs(ctx, bytenr);
    await ctx.space.release(bytenr, d.numBytes);
    await ctx.deleteCsums(bytenr, bytenr + d.numBytes);
    return;
  }
  await store(ctx, k, raw, item);
}
