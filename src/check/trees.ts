/**
 * Every tree block reachable from every root, read through the verifying
 * reader (checksum, bytenr, generation, level, first key, item rules), plus
 * what a reader cannot see block by block: a block met twice in one tree (a
 * loop or a cross-link), a child whose keys stray outside the range its
 * parent pointer gives it, and the references each block makes, collected
 * for the extent tree comparison: a parent flagged FULL_BACKREF references
 * its children by its own bytenr, any other by its owner's root id; file
 * extent items reference data extents the same way from their leaf.
 *
 * A block reached from several trees (snapshots share subtrees) is expanded
 * once: its references exist once in the extent tree, however many roots see it.
 */
import { BtrfsError } from '../util/errors.js';
import { EXTENT_FLAG, FILE_EXTENT, KEY, OBJ } from '../format/constants.js';
import { compareKeys, formatKey, type Key } from '../format/key.js';
import { decodeFileExtentItem } from '../format/items/file-extent-item.js';
import type { TreeBlock } from '../format/tree-block.js';
import { walkBlocks, type RootLocation } from '../tree/search.js';
import type { CheckContext, RecordedRef } from './context.js';

interface Parent { block: TreeBlock; fullBackref: boolean }

/** The trees a check walks: root and chunk tree, then one per ROOT_ITEM, in root tree order. */
export function treesToWalk(ctx: CheckContext): { loc: RootLocation; refRoot: bigint }[] {
  const out: { loc: RootLocation; refRoot: bigint }[] = [
    { loc: ctx.info.treeRoot, refRoot: OBJ.ROOT_TREE },
    { loc: ctx.info.chunkRoot, refRoot: OBJ.CHUNK_TREE },
  ];
  for (const r of ctx.roots) {
    if (r.partiallyDropped) continue;
    out.push({ loc: { objectid: r.objectid, bytenr: r.item.bytenr, level: r.item.level, generation: r.item.generation }, refRoot: r.objectid });
  }
  return out;
}

export async function walkTrees(ctx: CheckContext): Promise<void> {
  const { report } = ctx;
  const expanded = new Set<bigint>();
  for (const r of ctx.roots) if (r.partiallyDropped) ctx.unverifiableRoots.add(r.objectid);
  for (const { loc, refRoot } of treesToWalk(ctx)) {
    ctx.onProgress?.(`checking tree ${loc.objectid}`);
    report.stats.trees++;
    await walkOne(ctx, loc, refRoot, expanded);
  }
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

function addRef(map: Map<bigint, { level: number; refs: RecordedRef[]; tree: bigint }>, bytenr: bigint, level: number, tree: bigint, ref: RecordedRef): void {
  let e = map.get(bytenr);
  if (!e) map.set(bytenr, e = { level, refs: [], tree });
  e.refs.push(ref);
}

async function walkOne(ctx: CheckContext, root: RootLocation, refRoot: bigint, expanded: Set<bigint>): Promise<void> {
  const { info, report, found } = ctx;
  const inTree = new Set<bigint>();
  const fullBackref = (bytenr: bigint) => ((ctx.extents.get(bytenr)?.flags ?? 0n) & EXTENT_FLAG.FULL_BACKREF) !== 0n;

  const visit = async (bytenr: bigint, level: number, generation: bigint, firstKey: Key | undefined, hi: Key | undefined, parent: Parent | undefined): Promise<void> => {
    if (inTree.has(bytenr)) {
      report.error('tree-loop', `tree block ${bytenr} is referenced more than once in tree ${root.objectid}`, { tree: root.objectid, block: bytenr });
      return;
    }
    inTree.add(bytenr);
    // A relocation tree's root block is FULL_BACKREF and references itself as parent.
    const ref: RecordedRef = !parent ? (fullBackref(bytenr) ? { kind: 'shared-block', parent: bytenr } : { kind: 'tree', root: refRoot })
      : parent.fullBackref ? { kind: 'shared-block', parent: parent.block.bytenr } : { kind: 'tree', root: parent.block.owner };
    addRef(found.blocks, bytenr, level, root.objectid, ref);
    if (expanded.has(bytenr)) return;
    expanded.add(bytenr);
    let block: TreeBlock;
    try {
      block = await info.reader.read({ bytenr, level, generation, firstKey, owner: root.objectid });
    } catch (e) {
      ctx.treesOk = false;
      report.fromError(e, 'bad-tree-block', { tree: root.objectid, block: bytenr });
      return;
    }
    report.stats.treeBlocks++;
    ctx.reachedBlocks.add(bytenr);
    if (hi && block.nritems > 0 && compareKeys(block.keyAt(block.nritems - 1), hi) >= 0) {
      report.error('bad-key-range', `tree block ${bytenr} last key ${formatKey(block.keyAt(block.nritems - 1))} is not below its parent's next key ${formatKey(hi)}`,
        { tree: root.objectid, block: bytenr });
    }
    if (!block.isLeaf) {
      const me: Parent = { block, fullBackref: fullBackref(bytenr) };
      for (let i = 0; i < block.ptrs.length; i++) {
        const p = block.ptrs[i]!;
        const next = block.ptrs[i + 1]?.key ?? hi;
        await visit(p.blockptr, block.level - 1, p.generation, p.key, next, me);
      }
      return;
    }
    if (root.objectid === OBJ.TREE_LOG) return;
    const shared = fullBackref(bytenr);
    for (const it of block.items) {
      if (it.key.type !== KEY.EXTENT_DATA) continue;
      let fe;
      try {
        fe = decodeFileExtentItem(it.data);
      } catch (e) {
        report.fromError(e, 'bad-file-extent', { tree: root.objectid, block: bytenr, key: it.key, inode: it.key.objectid });
        continue;
      }
      if (fe.type === FILE_EXTENT.INLINE || !('disk_bytenr' in fe) || fe.disk_bytenr === 0n) continue;
      let d = found.data.get(fe.disk_bytenr);
      if (!d) found.data.set(fe.disk_bytenr, d = { numBytes: new Set(), refs: [], where: { tree: block.owner, inode: it.key.objectid, key: it.key } });
      d.numBytes.add(fe.disk_num_bytes);
      d.refs.push(shared ? { kind: 'shared-data', parent: bytenr, count: 1 }
        : { kind: 'data', root: block.owner, objectid: it.key.objectid, offset: BigInt.asUintN(64, it.key.offset - fe.offset), count: 1 });
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
