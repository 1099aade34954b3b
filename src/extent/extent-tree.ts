/**
 * Applying reference changes to the extent tree (the kernel's
 * run_delayed_refs, __btrfs_free_extent, alloc_reserved_*): one skinny
 * METADATA_ITEM per tree block with its TREE_BLOCK_REF, one EXTENT_ITEM per
 * data extent with EXTENT_DATA_REFs — inline while the item stays small,
 * keyed items beyond — and the extent's space released when its last
 * reference goes.
 *
 * Inline refs are kept in the order the kernel's tree-checker demands: by
 * type ascending, and within a type by "sequence" (root or parent bytenr,
 * or the data ref hash) descending; a mount refuses anything else.
 */
import { BtrfsError, corrupt } from '../util/errors.js';
import { KEY, OBJ, EXTENT_FLAG, ITEM_SIZE } from '../format/constants.js';
import { key, type Key } from '../format/key.js';
import { leafDataSize } from '../format/tree-block-encode.js';
import { decodeExtentItem, encodeExtentItem, extentItemSize, inlineRefSize, type ExtentItem, type InlineRef } from '../format/items/extent-item.js';
import { decodeExtentDataRef, encodeExtentDataRef, extentDataRefHash } from '../format/items/extent-ref.js';
import type { TreeItems } from '../tree/tree-store.js';
import type { DataRefChange, MetaRefChange, DataRefKey } from './delayed-refs.js';
import type { SpaceManager } from './block-groups.js';

export interface ExtentTreeContext {
  items: TreeItems;
  space: SpaceManager;
  generation: bigint;
  nodesize: number;
  /** removes the checksums of a freed data extent */
  deleteCsums: (start: bigint, end: bigint) => Promise<void>;
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

export async function applyMetaRef(ctx: ExtentTreeContext, bytenr: bigint, m: MetaRefChange): Promise<void> {
  const ns = BigInt(ctx.nodesize);
  if (m.isNew) {
    if (m.delta === 0) {
      await ctx.space.release(bytenr, ns);
      return;
    }
    const item: ExtentItem = { refs: 1n, generation: ctx.generation, flags: EXTENT_FLAG.TREE_BLOCK, inlineRefs: [{ type: KEY.TREE_BLOCK_REF, root: m.owner }] };
    await ctx.items.insert(E, key(bytenr, KEY.METADATA_ITEM, BigInt(m.level)), encodeExtentItem(item));
    return;
  }
  if (m.delta !== -1) throw new BtrfsError('EUCLEAN', `tree block ${bytenr}: reference change ${m.delta}`, { block: bytenr });
  let k: Key = key(bytenr, KEY.METADATA_ITEM, BigInt(m.level));
  let raw = await ctx.items.lookup(E, k);
  let skinny = true;
  if (!raw) {
    k = key(bytenr, KEY.EXTENT_ITEM, ns);
    raw = await ctx.items.lookup(E, k);
    skinny = false;
  }
  if (!raw) throw corrupt(`freeing tree block ${bytenr} of tree ${m.owner}: no extent item`, { tree: E, block: bytenr });
  const item = decodeExtentItem(raw, { skinny });
  if (item.refs <= 1n) {
    await ctx.items.delete(E, k);
    await deleteKeyedRefs(ctx, bytenr, ns);
    await ctx.space.release(bytenr, ns);
    return;
  }
  // a block shared with a snapshot: only this tree's reference goes
  const i = item.inlineRefs.findIndex((r) => r.type === KEY.TREE_BLOCK_REF && r.root === m.owner);
  if (i >= 0) item.inlineRefs.splice(i, 1);
  else {
    const rk = key(bytenr, KEY.TREE_BLOCK_REF, m.owner);
    if (!(await ctx.items.lookup(E, rk))) throw corrupt(`tree block ${bytenr}: tree ${m.owner} holds no reference to drop`, { tree: E, block: bytenr });
    await ctx.items.delete(E, rk);
  }
  item.refs -= 1n;
  await rewrite(ctx, k, raw.length, item);
}

/** Deletes any keyed backref items of an extent whose item is gone. */
async function deleteKeyedRefs(ctx: ExtentTreeContext, bytenr: bigint, _len: bigint): Promise<void> {
  const doomed: Key[] = [];
  for await (const it of ctx.items.iter(E, key(bytenr, KEY.TREE_BLOCK_REF, 0n), key(bytenr, KEY.SHARED_DATA_REF, 0xffff_ffff_ffff_ffffn))) {
    if (it.key.type >= KEY.TREE_BLOCK_REF && it.key.type <= KEY.SHARED_DATA_REF) doomed.push(it.key);
  }
  for (const k of doomed) await ctx.items.delete(E, k);
}

async function rewrite(ctx: ExtentTreeContext, k: Key, oldSize: number, item: ExtentItem): Promise<void> {
  const buf = encodeExtentItem(item);
  if (buf.length !== oldSize) await ctx.items.resize(E, k, buf.length);
  await ctx.items.update(E, k, buf);
}

/** The keyed EXTENT_DATA_REF item for `ref`, probing past hash collisions as the kernel does. */
async function findKeyedDataRef(ctx: ExtentTreeContext, bytenr: bigint, ref: DataRefKey): Promise<{ k: Key; count: number } | undefined> {
  let off = extentDataRefHash(ref.root, ref.ino, ref.offset);
  for (let probe = 0; probe < 64; probe++, off++) {
    const k = key(bytenr, KEY.EXTENT_DATA_REF, off);
    const raw = await ctx.items.lookup(E, k);
    if (!raw) return undefined;
    const d = decodeExtentDataRef(raw);
    if (d.root === ref.root && d.objectid === ref.ino && d.offset === ref.offset) return { k, count: d.count };
  }
  return undefined;
}

async function insertKeyedDataRef(ctx: ExtentTreeContext, bytenr: bigint, ref: DataRefKey, count: number): Promise<void> {
  let off = extentDataRefHash(ref.root, ref.ino, ref.offset);
  for (;;) {
    const k = key(bytenr, KEY.EXTENT_DATA_REF, off);
    if (!(await ctx.items.lookup(E, k))) {
      await ctx.items.insert(E, k, encodeExtentDataRef({ root: ref.root, objectid: ref.ino, offset: ref.offset, count }));
      return;
    }
    off++;
  }
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
  const limit = maxExtentItemSize(ctx.nodesize);
  for (const ch of d.refs.values()) {
    if (ch.delta === 0) continue;
    const where = `data extent ${bytenr}: reference (root ${ch.root} inode ${ch.ino} offset ${ch.offset})`;
    const inl = item.inlineRefs.find((r) => r.type === KEY.EXTENT_DATA_REF && r.root === ch.root && r.objectid === ch.ino && r.offset === ch.offset);
    if (inl && inl.type === KEY.EXTENT_DATA_REF) {
      const n = inl.count + ch.delta;
      if (n < 0) throw corrupt(`${where} would drop below zero`, { tree: E, block: bytenr });
      if (n === 0) item.inlineRefs.splice(item.inlineRefs.indexOf(inl), 1);
      else inl.count = n;
    } else {
      const keyed = d.isNew ? undefined : await findKeyedDataRef(ctx, bytenr, ch);
      if (keyed) {
        const n = keyed.count + ch.delta;
        if (n < 0) throw corrupt(`${where} would drop below zero`, { tree: E, block: bytenr });
        if (n === 0) await ctx.items.delete(E, keyed.k);
        else await ctx.items.update(E, keyed.k, encodeExtentDataRef({ root: ch.root, objectid: ch.ino, offset: ch.offset, count: n }));
      } else if (ch.delta < 0) {
        throw corrupt(`${where} does not exist`, { tree: E, block: bytenr });
      } else if (extentItemSize(item) + inlineRefSize(KEY.EXTENT_DATA_REF) <= limit) {
        item.inlineRefs.push({ type: KEY.EXTENT_DATA_REF, root: ch.root, objectid: ch.ino, offset: ch.offset, count: ch.delta });
      } else {
        await insertKeyedDataRef(ctx, bytenr, ch, ch.delta);
      }
    }
    item.refs += BigInt(ch.delta);
  }
  if (item.refs < 0n) throw corrupt(`data extent ${bytenr}: reference count below zero`, { tree: E, block: bytenr });
  if (item.refs === 0n) {
    if (raw) await ctx.items.delete(E, k);
    if (!d.isNew) await deleteKeyedRefs(ctx, bytenr, d.numBytes);
    await ctx.space.release(bytenr, d.numBytes);
    await ctx.deleteCsums(bytenr, bytenr + d.numBytes);
    return;
  }
  sortInlineRefs(item.inlineRefs);
  if (raw) await rewrite(ctx, k, raw.length, item);
  else await ctx.items.insert(E, k, encodeExtentItem(item));
}
