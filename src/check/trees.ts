/**
 * Every tree block reachable from every root, read through the verifying
 * reader (checksum, bytenr, generation, level, first key, item rules), plus
 * what a reader cannot see block by block: a block met twice in one tree (a
 * loop or a cross-link), a child whose keys stray outside the range its
 * parent pointer gives it, item types in a tree that cannot hold them, and
 * the references each block makes, collected for the extent tree
 * comparison.
 *
 * Whether a block references its children (and file extents) by its own
 * bytenr (FULL_BACKREF) or by its owner's root id is decided as btrfs check
 * decides it: the extent item's flag, overruled where it cannot be right (a
 * block written since the last snapshot of the tree that owns it cannot be
 * shared; a relocation block is always shared), which is then itself an
 * error. Each block not in full-backref mode must be owned by a tree that
 * references it, or at least lie where its owner's tree would look for it.
 *
 * A block reached from several trees (snapshots share subtrees) is expanded
 * once: its references exist once in the extent tree, however many roots see it.
 */
import { BtrfsError } from '../util/errors.js';
import {
  BACKREF_REV_SHIFT, EXTENT_FLAG, FEATURE_COMPAT_RO, FILE_EXTENT, HEADER_FLAG, KEY, MIXED_BACKREF_REV, OBJ,
} from '../format/constants.js';
import { compareKeys, formatKey, type Key } from '../format/key.js';
import type { TreeBlock } from '../format/tree-block.js';
import { walkBlocks, type RootLocation } from '../tree/search.js';
import type { BlockShape, CheckContext, RecordedRef } from './context.js';
import { childExps, prefetch, readBlock } from './walk.js';
import { firstKeyProblem } from '../verify/tree-checker.js';
import { addrKey, fromBig, keyAddr, readBig, readU64, toBig, type AddrKey, type U64 } from './u64.js';
import { HEADER_SIZE, ITEM_SIZE } from '../format/constants.js';

interface Parent { block: TreeBlock; fullBackref: boolean }

/** What the owner check needs to know of a block after the walk. */
interface BlockFacts { owner: bigint; level: number; generation: bigint; firstKey: Key | undefined; fullBackref: boolean }

/** The trees a check walks: root and chunk tree, then one per ROOT_ITEM, in root tree order. */
export function treesToWalk(ctx: CheckContext): { loc: RootLocation; refRoot: bigint; lastSnapshot: bigint }[] {
  const out: { loc: RootLocation; refRoot: bigint; lastSnapshot: bigint }[] = [
    { loc: ctx.info.treeRoot, refRoot: OBJ.ROOT_TREE, lastSnapshot: 0n },
    { loc: ctx.info.chunkRoot, refRoot: OBJ.CHUNK_TREE, lastSnapshot: 0n },
  ];
  for (const r of ctx.roots) {
    if (r.partiallyDropped) continue;
    out.push({
      loc: { objectid: r.objectid, bytenr: r.item.bytenr, level: r.item.level, generation: r.item.generation },
      refRoot: r.objectid, lastSnapshot: r.item.last_snapshot,
    });
  }
  return out;
}

/** Trees that may share blocks with snapshots (and so hold FULL_BACKREF blocks). */
const sharesBlocks = (objectid: bigint): boolean => objectid >= OBJ.FIRST_FREE || objectid === OBJ.FS_TREE;

/** What a block points to, for quota accounting. */
export function shapeOf(block: TreeBlock): BlockShape {
  if (!block.isLeaf) return { children: block.ptrs.map((p) => p.blockptr) };
  const extents: bigint[] = [];
  for (let slot = 0; slot < block.nritems; slot++) {
    if (block.itemTypeAt(slot) !== KEY.EXTENT_DATA) continue;
    const d = block.itemDataAt(slot);
    if (d.length < 53 || d[20] === FILE_EXTENT.INLINE) continue;
    const disk = d.readBigUInt64LE(21);
    if (disk !== 0n) extents.push(disk, d.readBigUInt64LE(29));
  }
  return { extents };
}

export async function walkTrees(ctx: CheckContext): Promise<void> {
  const { report } = ctx;
  if (ctx.roots.some((r) => r.objectid === OBJ.QUOTA_TREE)) ctx.shapes = new Map();
  const expanded = new Set<AddrKey>();
  const facts = new Map<AddrKey, BlockFacts>();
  const rootBlocks = new Set<bigint>();
  for (const r of ctx.roots) if (r.partiallyDropped) ctx.unverifiableRoots.add(r.objectid);
  // Metadata in use, in blocks: what the walk will read, near enough, for progress.
  const metaBlocks = Number([...ctx.extents.values()].filter((e) => e.metadata).length) || 1;
  for (const t of treesToWalk(ctx)) {
    ctx.onProgress?.(`tree ${t.loc.objectid}`, report.stats.treeBlocks / metaBlocks);
    report.stats.trees++;
    rootBlocks.add(t.loc.bytenr);
    await walkOne(ctx, t.loc, t.refRoot, t.lastSnapshot, expanded, facts, metaBlocks);
  }
  await checkOwners(ctx, facts, rootBlocks);
  const log = ctx.info.logRoot;
  if (log) {
    // Log tree blocks are not in the extent tree until replay; only their integrity is checked.
    try {
      await walkBlocks(ctx.info.reader, log, () => { report.stats.treeBlocks++; });
    } catch (e) {
      report.fromError(e, 'log-tree', { tree: OBJ.TREE_LOG });
    }
  }
}

function addRef(map: Map<AddrKey, { level: number; refs: RecordedRef[]; tree: bigint }>, bytenr: AddrKey, level: number, tree: bigint, ref: RecordedRef): void {
  const e = map.get(bytenr);
  // a one-element literal: an empty array's first push would reserve room for 17
  if (!e) map.set(bytenr, { level, refs: [ref], tree });
  else e.refs.push(ref);
}

/**
 * Item types that belong to one tree only, by the leaf's owner; btrfs check
 * ignores such an item, and everything that needed it then goes missing.
 */
function wrongTreeFor(type: number, owner: bigint, bgTree: boolean): boolean {
  // (The walk calls this only for types >= ROOT_ITEM; keep every case below at or above it.)
  switch (type) {
    case KEY.DEV_ITEM:
    case KEY.CHUNK_ITEM: return owner !== OBJ.CHUNK_TREE;
    case KEY.EXTENT_ITEM:
    case KEY.METADATA_ITEM: return owner !== OBJ.EXTENT_TREE;
    case KEY.BLOCK_GROUP_ITEM: return owner !== (bgTree ? OBJ.BLOCK_GROUP_TREE : OBJ.EXTENT_TREE);
    case KEY.ROOT_ITEM: return owner !== OBJ.ROOT_TREE;
    case KEY.DEV_EXTENT: return owner !== OBJ.DEV_TREE;
    default: return false;
  }
}

const ONE = 1n;

/** A data backref's offset: the file offset less the offset into the extent, wrapping as a u64. */
function refOffset(fileOffset: U64, extentOffset: U64): U64 {
  if (typeof fileOffset === 'number' && typeof extentOffset === 'number' && fileOffset >= extentOffset) return fileOffset - extentOffset;
  return fromBig(BigInt.asUintN(64, toBig(fileOffset) - toBig(extentOffset)));
}

async function walkOne(
  ctx: CheckContext, root: RootLocation, refRoot: bigint, lastSnapshot: bigint,
  expanded: Set<AddrKey>, facts: Map<AddrKey, BlockFacts>, metaBlocks: number,
): Promise<void> {
  const { info, report, found } = ctx;
  const inTree = new Set<AddrKey>();
  const superGenLimit = info.sb.generation + ONE;
  const superGenLimitU64 = fromBig(superGenLimit);
  const bgTree = (info.sb.compat_ro_flags & FEATURE_COMPAT_RO.BLOCK_GROUP_TREE) !== 0n;

  /** Full-backref mode of a block just read: the extent item's flag, unless it cannot be right (then overruled and reported). */
  const backrefMode = (block: TreeBlock, isRoot: boolean): boolean => {
    const rec = ctx.extents.get(addrKey(fromBig(block.bytenr)));
    const relocFlag = (block.header.flags & HEADER_FLAG.RELOC) !== 0n;
    let full = rec ? (rec.flags & EXTENT_FLAG.FULL_BACKREF) !== 0n : (sharesBlocks(refRoot) || refRoot === OBJ.TREE_RELOC) && !isRoot && relocFlag;
    let wrong = false;
    if (full) {
      // Reached from its own tree and written after that tree's last snapshot: nothing else can share it.
      if (refRoot !== OBJ.TREE_RELOC && refRoot === block.owner && !relocFlag && block.generation > lastSnapshot) {
        full = false;
        wrong = true;
      }
    } else if (refRoot === OBJ.TREE_RELOC || relocFlag) {
      full = true;
      wrong = true;
    }
    if (wrong) report.error('bad-full-backref', `bad full backref, on [${block.bytenr}]`, { tree: refRoot, block: block.bytenr });
    return full;
  };

  const visit = async (bytenr: bigint, level: number, generation: bigint, firstKey: Key | undefined, hi: Key | undefined, parent: Parent | undefined): Promise<void> => {
    const id = addrKey(fromBig(bytenr));
    if (inTree.has(id)) {
      report.error('tree-loop', `tree block ${bytenr} is referenced more than once in tree ${root.objectid}`, { tree: root.objectid, block: bytenr });
      return;
    }
    inTree.add(id);
    if (parent) {
      addRef(found.blocks, id, level, root.objectid,
        parent.fullBackref ? { kind: 'shared-block', parent: parent.block.bytenr } : { kind: 'tree', root: parent.block.owner });
    }
    if (expanded.has(id)) {
      // Reached again through another tree's pointer: that pointer must agree with the block too.
      const f = facts.get(id);
      if (f && generation !== 0n && f.generation !== generation) {
        report.error('bad-tree-block', `parent transid verify failed on ${bytenr} wanted ${generation} found ${f.generation}`, { tree: root.objectid, block: bytenr });
      } else if (f && f.level !== level) {
        report.error('bad-tree-block', `bad tree block level, want ${level} have ${f.level}`, { tree: root.objectid, block: bytenr });
      } else if (f && firstKey) {
        const problem = firstKeyProblem(f.level === 0, bytenr, f.firstKey, firstKey);
        if (problem) report.error('bad-tree-block', problem, { tree: root.objectid, block: bytenr, key: f.firstKey });
      }
      return;
    }
    expanded.add(id);
    let block: TreeBlock;
    try {
      block = await readBlock(ctx, { bytenr, level, generation, firstKey, owner: root.objectid });
    } catch (e) {
      ctx.treesOk = false;
      report.fromError(e, 'bad-tree-block', { tree: root.objectid, block: bytenr });
      // The reference still counts: the parent points here whether or not the block reads.
      if (!parent) addRef(found.blocks, id, level, root.objectid, { kind: 'tree', root: refRoot });
      return;
    }
    report.stats.treeBlocks++;
    if ((report.stats.treeBlocks & 255) === 0) ctx.onProgress?.(`tree ${root.objectid}`, report.stats.treeBlocks / metaBlocks);
    ctx.reachedBlocks.add(id);
    // A pointer generation of 0 verifies nothing (the reader treats it as unknown), but no writer stores one.
    if (parent && generation === 0n) {
      report.error('ptr-generation', `Wrong generation of child node/leaf, wanted: ${block.generation}, have: 0`, { tree: root.objectid, block: bytenr });
    }
    const rev = block.header.flags >> BACKREF_REV_SHIFT;
    if (!parent) {
      // A root references itself as its parent in a relocation tree or in the old backref format.
      addRef(found.blocks, id, level, root.objectid,
        refRoot === OBJ.TREE_RELOC || rev < MIXED_BACKREF_REV ? { kind: 'shared-block', parent: bytenr } : { kind: 'tree', root: refRoot });
    }
    const full = backrefMode(block, !parent);
    facts.set(id, { owner: block.owner, level: block.level, generation: block.generation, firstKey: block.firstKey(), fullBackref: full });
    ctx.shapes?.set(bytenr, shapeOf(block));
    const last = hi && block.nritems > 0 ? (block.isLeaf ? block.itemKeyAt(block.nritems - 1) : block.keyAt(block.nritems - 1)) : undefined;
    if (hi && last && compareKeys(last, hi) >= 0) {
      report.error('bad-key-range', `tree block ${bytenr} last key ${formatKey(last)} is not below its parent's next key ${formatKey(hi)}`,
        { tree: root.objectid, block: bytenr });
    }
    if (!block.isLeaf) {
      const me: Parent = { block, fullBackref: full };
      // Children already expanded from another tree are not read again.
      prefetch(ctx, childExps(block, root.objectid).filter((c) => !expanded.has(addrKey(fromBig(c.bytenr)))));
      for (let i = 0; i < block.ptrs.length; i++) {
        const p = block.ptrs[i]!;
        const next = block.ptrs[i + 1]?.key ?? hi;
        await visit(p.blockptr, block.level - 1, p.generation, p.key, next, me);
      }
      return;
    }
    if (root.objectid === OBJ.TREE_LOG) return;
    // Slot by slot, keys decoded only where needed: this runs for every item of the filesystem.
    for (let slot = 0; slot < block.nritems; slot++) {
      const type = block.buf[HEADER_SIZE + slot * ITEM_SIZE + 8]!;
      // Every type wrongTreeFor knows sorts after ROOT_ITEM: the items of fs trees skip the call.
      if (type >= KEY.ROOT_ITEM && wrongTreeFor(type, block.owner, bgTree)) {
        const k = block.itemKeyAt(slot);
        report.error('key-type-wrong-tree', `Invalid key type(${k.type}) found in root(${block.owner}): ignoring invalid key ${formatKey(k)}`,
          { tree: root.objectid, block: bytenr, key: k });
        continue;
      }
      if (type !== KEY.EXTENT_DATA) continue;
      // Raw reads at the item's place in the block: the item rules already vouched for the sizes.
      const d = block.buf;
      const at = block.itemStartAt(slot);
      const len = block.itemSizeAt(slot);
      if (len < 53 || d[at + 20] === FILE_EXTENT.INLINE) continue;
      const disk = readU64(d, at + 21);
      if (disk === 0) continue;
      // Kept values as few bigint objects as may be (see readBig): one of these is kept per file extent.
      const keyAt = HEADER_SIZE + slot * ITEM_SIZE;
      const objectid = readU64(d, keyAt);
      const feGen = readU64(d, at);
      if (feGen > superGenLimitU64) {
        const k = block.itemKeyAt(slot);
        report.error('bad-extent-generation', `invalid generation for extent ${disk}, have ${feGen} expect (0, ${superGenLimit}]`,
          { tree: root.objectid, block: bytenr, key: k, inode: k.objectid });
      }
      const diskNumBytes = readBig(d, at + 29);
      const dk = addrKey(disk);
      const fileOffset = readU64(d, keyAt + 9);
      const ref: RecordedRef = full ? { kind: 'shared-data', parent: bytenr, count: 1 }
        : { kind: 'data', root: block.owner, objectid, offset: refOffset(fileOffset, readU64(d, at + 37)), count: 1 };
      const e = found.data.get(dk);
      if (!e) {
        found.data.set(dk, { numBytes: diskNumBytes, refs: [ref], tree: block.owner, inode: objectid, fileOffset });
        continue;
      }
      if (e.numBytes !== diskNumBytes && !e.otherSizes?.includes(diskNumBytes)) (e.otherSizes ??= []).push(diskNumBytes);
      e.refs.push(ref);
    }
  };
  try {
    await visit(root.bytenr, root.level, root.generation, undefined, undefined, undefined);
  } catch (e) {
    if (!(e instanceof BtrfsError)) throw e;
    ctx.treesOk = false;
    report.fromError(e, 'bad-tree-block', { tree: root.objectid });
  }
}

/**
 * A block not in full-backref mode names its owner in its header; some tree
 * of that id must reference it directly, or (a block below shared nodes) the
 * owner's tree must lead to it when searched for its first key.
 */
async function checkOwners(ctx: CheckContext, facts: Map<AddrKey, BlockFacts>, rootBlocks: Set<bigint>): Promise<void> {
  const { info, report } = ctx;
  const rootOf = (id: bigint): RootLocation | undefined => {
    if (id === OBJ.ROOT_TREE) return info.treeRoot;
    if (id === OBJ.CHUNK_TREE) return info.chunkRoot;
    let best: RootLocation | undefined;
    for (const r of ctx.roots) {
      if (r.objectid === id && id !== OBJ.TREE_RELOC) best = { objectid: id, bytenr: r.item.bytenr, level: r.item.level, generation: r.item.generation };
    }
    return best;
  };
  for (const [id, f] of facts) {
    if (f.fullBackref) continue;
    const refs = ctx.found.blocks.get(id)?.refs ?? [];
    const bytenr = keyAddr(id);
    if (refs.some((r) => r.kind === 'tree' && r.root === f.owner)) continue;
    let ok = false;
    if (!rootBlocks.has(bytenr) && f.firstKey) {
      const loc = rootOf(f.owner);
      if (loc) ok = await ownerTreeLeadsTo(ctx, loc, f.firstKey, f.level, bytenr);
    }
    if (!ok) {
      report.error('owner-ref', `owner ref check failed [${bytenr} ${info.nodesize}] (header owner ${f.owner})`, { tree: f.owner, block: bytenr });
    }
  }
}

/** Whether searching `loc` for `k` down to level+1 ends at a pointer to `bytenr`; unreadable paths count as yes (their damage is reported elsewhere). */
async function ownerTreeLeadsTo(ctx: CheckContext, loc: RootLocation, k: Key, level: number, bytenr: bigint): Promise<boolean> {
  try {
    let b = await ctx.info.reader.read({ bytenr: loc.bytenr, level: loc.level, generation: loc.generation, owner: loc.objectid });
    if (b.level <= level) return false;
    for (;;) {
      let { slot } = b.search(k);
      if (slot < 0) slot = 0;
      const p = b.ptrs[slot];
      if (!p) return false;
      if (b.level === level + 1) return p.blockptr === bytenr;
      b = await ctx.info.reader.read({ bytenr: p.blockptr, level: b.level - 1, generation: p.generation, firstKey: p.key, owner: loc.objectid });
    }
  } catch (e) {
    if (!(e instanceof BtrfsError)) throw e;
    return true;
  }
}
