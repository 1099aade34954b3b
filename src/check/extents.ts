/**
 * The extent tree against reality. Loading it checks each record on its own
 * (alignment, generation, level, refs = the sum of its backrefs, no overlap,
 * no keyed backref without its extent item); comparing it with the
 * references the tree walk found checks that every tree block and data
 * extent in use has an extent item whose backrefs are exactly its users, and
 * that nothing is recorded that nobody uses. Block group used bytes and the
 * superblock's bytes_used are sums of these records.
 */
import { BLOCK_GROUP, BLOCK_GROUP_PROFILE_MASK, BLOCK_GROUP_TYPE_MASK, EXTENT_FLAG, FEATURE_COMPAT_RO, FEATURE_INCOMPAT, KEY, MAX_LEVEL, OBJ } from '../format/constants.js';
import { decodeExtentDataRef, decodeSharedDataRef } from '../format/items/extent-ref.js';
import { decodeBlockGroupItem } from '../format/items/block-group-item.js';
import type { RootLocation } from '../tree/search.js';
import { forEachItem, forEachLeaf } from './walk.js';
import { HEADER_SIZE, ITEM_SIZE } from '../format/constants.js';
import type { TreeBlock } from '../format/tree-block.js';
import type { BlockGroupRecord, CheckContext, ExtentRecord, FoundData, RecordedRef } from './context.js';
import type { Key } from '../format/key.js';
import { addrKey, addU64, fromBig, keyAddr, readBig, readU64, toBig, type U64 } from './u64.js';

export function rootLocation(ctx: CheckContext, objectid: bigint): RootLocation | undefined {
  const r = ctx.roots.find((x) => x.objectid === objectid);
  return r && { objectid, bytenr: r.item.bytenr, level: r.item.level, generation: r.item.generation };
}

function refKey(r: RecordedRef): string {
  switch (r.kind) {
    case 'tree': return `tree block backref root ${r.root}`;
    case 'shared-block': return `shared block backref parent ${r.parent}`;
    case 'data': return `data backref root ${r.root} owner ${r.objectid} offset ${r.offset}`;
    case 'shared-data': return `shared data backref parent ${r.parent}`;
  }
}

const EMPTY = Buffer.alloc(0);

/** Where an extent record came from, for a finding: its block and its key, rebuilt (records keep no key object). */
export function recordWhere(rec: ExtentRecord): { tree: bigint; block: bigint; key: Key } {
  const key = { objectid: rec.bytenr, type: rec.skinny ? KEY.METADATA_ITEM : KEY.EXTENT_ITEM, offset: rec.skinny ? BigInt(rec.level ?? 0) : rec.numBytes };
  return { tree: OBJ.EXTENT_TREE, block: rec.block, key };
}

/** Where a data extent was first found: the file extent item naming it. */
function foundWhere(f: FoundData): { tree: bigint; key: Key; inode: bigint } {
  const inode = toBig(f.inode);
  return { tree: f.tree, key: { objectid: inode, type: KEY.EXTENT_DATA, offset: toBig(f.fileOffset) }, inode };
}

const MAX_LEVEL_BIG = BigInt(MAX_LEVEL);

const refCount = (r: RecordedRef): number => (r.kind === 'data' || r.kind === 'shared-data' ? r.count : 1);

function tally(refs: RecordedRef[]): Map<string, { n: number; ref: RecordedRef }> {
  const m = new Map<string, { n: number; ref: RecordedRef }>();
  for (const r of refs) {
    const k = refKey(r);
    const e = m.get(k);
    if (e) e.n += refCount(r); else m.set(k, { n: refCount(r), ref: r });
  }
  return m;
}

/**
 * An extent item's fields and inline refs, read straight from its bytes
 * (every extent of the filesystem passes here); undefined when it is too
 * short or an inline ref is of an unknown type or overruns the item.
 * EXTENT_OWNER_REF (simple quotas) names an owner, not a reference: skipped.
 */
function parseExtentItem(d: Buffer, at: number, len: number, skinny: boolean): { refs: bigint; generation: bigint; flags: bigint; level?: number; recorded: RecordedRef[]; ownerRef: boolean } | undefined {
  if (len < 24) return undefined;
  const end = at + len;
  const flags = readBig(d, at + 16);
  let off = at + 24;
  let level: number | undefined;
  if ((flags & EXTENT_FLAG.TREE_BLOCK) !== 0n && !skinny) {
    if (off + 18 > end) return undefined;
    level = d[off + 17];
    off += 18;
  }
  // Most extents have one backref: a one-element literal, where push on an empty array would reserve room for 17.
  let recorded: RecordedRef[] | undefined;
  const add = (r: RecordedRef): void => {
    if (recorded) recorded.push(r);
    else recorded = [r];
  };
  let ownerRef = false;
  while (off < end) {
    const type = d[off]!;
    const size = type === KEY.EXTENT_DATA_REF ? 29 : type === KEY.SHARED_DATA_REF ? 13
      : type === KEY.TREE_BLOCK_REF || type === KEY.SHARED_BLOCK_REF || type === KEY.EXTENT_OWNER_REF ? 9 : 0;
    if (size === 0 || off + size > end) return undefined;
    switch (type) {
      case KEY.TREE_BLOCK_REF: add({ kind: 'tree', root: readBig(d, off + 1) }); break;
      case KEY.SHARED_BLOCK_REF: add({ kind: 'shared-block', parent: readBig(d, off + 1) }); break;
      case KEY.EXTENT_DATA_REF:
        add({ kind: 'data', root: readBig(d, off + 1), objectid: readU64(d, off + 9), offset: readU64(d, off + 17), count: d.readUInt32LE(off + 25) });
        break;
      case KEY.SHARED_DATA_REF: add({ kind: 'shared-data', parent: readBig(d, off + 1), count: d.readUInt32LE(off + 9) }); break;
      case KEY.EXTENT_OWNER_REF: ownerRef = true; break;
      default: break;
    }
    off += size;
  }
  return { refs: readBig(d, at), generation: readBig(d, at + 8), flags, level, recorded: recorded ?? [], ownerRef };
}

export async function loadExtentTree(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const loc = rootLocation(ctx, OBJ.EXTENT_TREE);
  if (!loc) {
    report.error('no-extent-tree', 'could not setup extent tree: no root item for the extent tree', { tree: OBJ.ROOT_TREE });
    ctx.extentTreeOk = false;
    return;
  }
  const sectorsize = BigInt(info.sectorsize);
  const nodesize = BigInt(info.nodesize);
  const superGen = info.sb.generation;
  // Block group items live in exactly one tree: the block group tree when that
  // feature is on, the extent tree otherwise. Items in the other tree are what an
  // interrupted conversion (btrfstune, super flag CHANGING_BG_TREE) leaves behind;
  // the kernel would never see them, so they are reported (and still counted, so the
  // block groups they describe do not cascade into "chunk has no block group").
  const bgTreeFeature = (info.sb.compat_ro_flags & FEATURE_COMPAT_RO.BLOCK_GROUP_TREE) !== 0n;
  const misplacedBg = (k: Key, tree: bigint, block: bigint): void => {
    const name = tree === OBJ.EXTENT_TREE ? 'EXTENT_TREE' : 'BLOCK_GROUP_TREE';
    report.error('block-group-wrong-tree', `Invalid key type(BLOCK_GROUP_ITEM) found in root(${name}) [${k.objectid} ${k.offset}]`, { tree, block, key: k });
  };
  const skinnyFeature = (info.sb.incompat_flags & FEATURE_INCOMPAT.SKINNY_METADATA) !== 0n;
  const squotaFeature = (info.sb.incompat_flags & FEATURE_INCOMPAT.SIMPLE_QUOTA) !== 0n;
  const rootNodes = new Map<bigint, { bytenr: bigint; level: number; generation: bigint; count: number }>();
  let cur: ExtentRecord | undefined;
  let prevEnd: U64 = 0;
  const ss = info.sectorsize;
  const nodesizeNum = info.nodesize;
  const genLimit = superGen + 1n;
  const where = (it: { key: Key; block: { bytenr: bigint } }) => ({ tree: OBJ.EXTENT_TREE, block: it.block.bytenr, key: it.key });
  const attach = (block: TreeBlock, slot: number, ref: RecordedRef): void => {
    if (!cur || cur.bytenr !== block.buf.readBigUInt64LE(HEADER_SIZE + slot * ITEM_SIZE)) {
      const it = { key: block.itemKeyAt(slot), block };
      report.error('orphan-backref', `backref ${refKey(ref)} for [${it.key.objectid}] has no extent item`, where(it));
      return;
    }
    cur.recorded.push(ref);
  };
  // Leaf by leaf, each item read in place: a key object and a view are made only for the
  // items that keep them (extent items), not for every backref of the filesystem.
  const item = (block: TreeBlock, slot: number): void => {
    const d = block.buf;
    const keyAt = HEADER_SIZE + slot * ITEM_SIZE;
    const type = d[keyAt + 8]!;
    switch (type) {
      case KEY.TREE_BLOCK_REF: attach(block, slot, { kind: 'tree', root: d.readBigUInt64LE(keyAt + 9) }); return;
      case KEY.SHARED_BLOCK_REF: attach(block, slot, { kind: 'shared-block', parent: d.readBigUInt64LE(keyAt + 9) }); return;
      case KEY.EXTENT_ITEM: case KEY.METADATA_ITEM: case KEY.EXTENT_DATA_REF: case KEY.SHARED_DATA_REF: case KEY.BLOCK_GROUP_ITEM: break;
      default: return;
    }
    const k = block.itemKeyAt(slot);
    // The item's bytes as a view only for the kinds decoded through one (not extent items, the most numerous).
    const it = { key: k, data: type === KEY.EXTENT_ITEM || type === KEY.METADATA_ITEM ? EMPTY : block.itemDataAt(slot), block, slot };
    try {
        switch (k.type) {
          case KEY.EXTENT_ITEM:
          case KEY.METADATA_ITEM: {
            const skinny = k.type === KEY.METADATA_ITEM;
            // Numbers where they are exact (see u64.ts): bigint arithmetic allocates a result each time.
            const start = readU64(d, keyAt);
            if (typeof start === 'number' ? start % ss !== 0 : start % sectorsize !== 0n) {
              report.error('unaligned-extent', `ignoring invalid extent, bytenr ${k.objectid} is not aligned to ${sectorsize}`, where(it));
              cur = undefined;
              break;
            }
            const e = parseExtentItem(d, block.itemStartAt(slot), block.itemSizeAt(slot), skinny);
            if (!e) {
              report.error('corrupt-extent', `corrupt extent record: key [${k.objectid},${k.type},${k.offset}]`, where(it));
              cur = undefined;
              break;
            }
            const metadata = (e.flags & EXTENT_FLAG.TREE_BLOCK) !== 0n;
            const numBytes = skinny ? nodesize : k.offset;
            const level = skinny ? Number(k.offset) : e.level;
            const rec: ExtentRecord = {
              bytenr: k.objectid, numBytes, refs: e.refs, generation: e.generation, flags: e.flags, metadata, level,
              recorded: e.recorded, skinny, block: it.block.bytenr,
            };
            report.stats.extentItems++;
            if (e.ownerRef && !squotaFeature) {
              report.error('owner-ref-no-squota', `extent [${k.objectid} ${numBytes}] has a simple quota owner ref but the filesystem lacks the simple quota feature`, where(it));
            }
            if (skinny && !skinnyFeature) {
              report.error('metadata-item-not-skinny', `METADATA_ITEM [${k.objectid} ${k.offset}] but the filesystem lacks the skinny-metadata feature`, where(it));
            }
            const first = e.recorded[0];
            if (metadata && first?.kind === 'tree' && level !== undefined) {
              // The highest tree block whose first backref names a root is that root's node.
              const root = first.root;
              const top = rootNodes.get(root);
              if (!top || level > top.level) rootNodes.set(root, { bytenr: k.objectid, level, generation: e.generation, count: 1 });
              else if (level === top.level) top.count++;
            }
            if (skinny && k.offset >= MAX_LEVEL_BIG) {
              report.error('bad-backref-level', `tree block ${k.objectid} has bad backref level, has ${k.offset} expect [0, ${MAX_LEVEL - 1}]`, where(it));
            }
            // The kernel's limit: one past the last commit (a transaction may have been under way).
            if (e.generation > genLimit) {
              report.error('bad-extent-generation', `invalid generation for extent ${k.objectid}, have ${e.generation} expect (0, ${genLimit}]`, where(it));
            }
            const len = skinny ? nodesizeNum : readU64(d, keyAt + 9);
            if (typeof len === 'number' ? len === 0 || len % ss !== 0 : len % sectorsize !== 0n) {
              report.error('bad-extent-length', `extent [${k.objectid} ${numBytes}] has a length not aligned to ${sectorsize}`, where(it));
            }
            if (start < prevEnd) {
              report.error('extent-overlap', `extent [${k.objectid} ${numBytes}] overlaps the previous extent ending at ${prevEnd}`, where(it));
            }
            prevEnd = addU64(start, len);
            const id = addrKey(start);
            if (ctx.extents.has(id)) {
              report.error('extent-duplicate', `extent ${k.objectid} has more than one extent item`, where(it));
            }
            ctx.extents.set(id, rec);
            cur = rec;
            break;
          }
          case KEY.EXTENT_DATA_REF: {
            const r = decodeExtentDataRef(it.data);
            attach(block, slot, { kind: 'data', root: r.root, objectid: fromBig(r.objectid), offset: fromBig(r.offset), count: r.count });
            break;
          }
          case KEY.SHARED_DATA_REF: attach(block, slot, { kind: 'shared-data', parent: k.offset, count: decodeSharedDataRef(it.data).count }); break;
          case KEY.BLOCK_GROUP_ITEM: {
            if (bgTreeFeature) misplacedBg(it.key, OBJ.EXTENT_TREE, it.block.bytenr);
            const bg = decodeBlockGroupItem(it.data);
            checkBlockGroupItem(ctx, k, bg, where(it));
            ctx.blockGroups.push({ start: k.objectid, length: k.offset, used: bg.used, flags: bg.flags, key: k });
            break;
          }
          default: break;
        }
    } catch (e) {
      report.fromError(e, 'corrupt-extent', where(it));
    }
  };
  try {
    await forEachLeaf(ctx, loc, (leaf) => {
      for (let slot = 0; slot < leaf.nritems; slot++) item(leaf, slot);
    });
  } catch (e) {
    ctx.extentTreeOk = false;
    report.fromError(e, 'extent-tree-unreadable', { tree: OBJ.EXTENT_TREE });
  }
  const bgTree = rootLocation(ctx, OBJ.BLOCK_GROUP_TREE);
  if (bgTree) {
    try {
      await forEachItem(ctx, bgTree, (key, data, block, slot) => {
      const it = { key, data, block, slot };
        if (it.key.type !== KEY.BLOCK_GROUP_ITEM) return;
        if (!bgTreeFeature) misplacedBg(it.key, OBJ.BLOCK_GROUP_TREE, it.block.bytenr);
        const bg = decodeBlockGroupItem(it.data);
        checkBlockGroupItem(ctx, it.key, bg, { tree: OBJ.BLOCK_GROUP_TREE, block: it.block.bytenr, key: it.key });
        ctx.blockGroups.push({ start: it.key.objectid, length: it.key.offset, used: bg.used, flags: bg.flags, key: it.key });
      })
    } catch (e) {
      report.fromError(e, 'block-group-tree-unreadable', { tree: OBJ.BLOCK_GROUP_TREE });
    }
  }
  if (ctx.extentTreeOk) checkRootNodes(ctx, rootNodes);
  ctx.blockGroups.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  report.stats.blockGroups = ctx.blockGroups.length;
  for (const rec of ctx.extents.values()) {
    const sum = rec.recorded.reduce((n, r) => n + BigInt(refCount(r)), 0n);
    if (sum !== rec.refs) {
      report.error('extent-refs-sum', `extent item [${rec.bytenr} ${rec.numBytes}] has refs ${rec.refs} but its backrefs add up to ${sum}`,
        recordWhere(rec));
    }
  }
}

/**
 * Each subvolume's root item must point at the node the extent tree knows as
 * that root's top block (the highest one whose first backref names it):
 * same bytenr, level and generation. A root item older than its node is
 * what an interrupted snapshot of the 3.17 era left; a newer one is damage.
 */
function checkRootNodes(ctx: CheckContext, rootNodes: Map<bigint, { bytenr: bigint; level: number; generation: bigint; count: number }>): void {
  for (const r of ctx.roots) {
    if (r.objectid < OBJ.FIRST_FREE || r.objectid === OBJ.TREE_RELOC) continue;
    const where = { tree: OBJ.ROOT_TREE, key: { objectid: r.objectid, type: KEY.ROOT_ITEM, offset: r.offset } };
    const top = rootNodes.get(r.objectid);
    if (!top) {
      ctx.report.error('root-node', `could not find extent items for root ${r.objectid}`, where);
      continue;
    }
    if (top.count !== 1) {
      ctx.report.error('root-node', `could not find btree root extent for root ${r.objectid} (${top.count} candidates at level ${top.level})`, where);
      continue;
    }
    const it = r.item;
    if (it.bytenr !== top.bytenr || it.level !== top.level || it.generation !== top.generation) {
      ctx.report.error('root-node', `root item for root ${r.objectid}, current bytenr ${it.bytenr}, current gen ${it.generation}, current level ${it.level}, ` +
        `new bytenr ${top.bytenr}, new gen ${top.generation}, new level ${top.level}`, where);
    }
  }
}

/** The kernel tree-checker's rules for a block group item on its own. */
function checkBlockGroupItem(ctx: CheckContext, k: Key, bg: { used: bigint; chunk_objectid: bigint; flags: bigint }, where: { tree: bigint; block: bigint; key: Key }): void {
  const why: string[] = [];
  if (k.offset === 0n) why.push('invalid block group size 0');
  if (bg.used > k.offset) why.push(`invalid block group used, have ${bg.used} expect [0, ${k.offset}]`);
  if (bg.chunk_objectid !== OBJ.FIRST_CHUNK_TREE) why.push(`invalid block group chunk objectid, have ${bg.chunk_objectid} expect ${OBJ.FIRST_CHUNK_TREE}`);
  const profile = bg.flags & BLOCK_GROUP_PROFILE_MASK;
  if ((profile & (profile - 1n)) !== 0n) why.push(`invalid profile flags, have 0x${profile.toString(16)} expect at most one bit`);
  const type = bg.flags & BLOCK_GROUP_TYPE_MASK;
  if (type !== BLOCK_GROUP.DATA && type !== BLOCK_GROUP.METADATA && type !== BLOCK_GROUP.SYSTEM && type !== (BLOCK_GROUP.DATA | BLOCK_GROUP.METADATA)) {
    why.push(`invalid type, have 0x${type.toString(16)} expect exactly one of data, metadata, system or data|metadata`);
  }
  for (const w of why) ctx.report.error('block-group-item', `block group [${k.objectid} ${k.offset}]: ${w}`, where);
}

const sameRef = (a: RecordedRef, b: RecordedRef): boolean => {
  switch (a.kind) {
    case 'tree': return b.kind === 'tree' && a.root === b.root;
    case 'shared-block': return b.kind === 'shared-block' && a.parent === b.parent;
    case 'data': return b.kind === 'data' && a.root === b.root && a.objectid === b.objectid && a.offset === b.offset;
    case 'shared-data': return b.kind === 'shared-data' && a.parent === b.parent;
  }
};

/**
 * The common case without building tallies (which name every reference in a
 * string): a few distinct recorded backrefs, each found exactly as many times
 * as it counts, nothing else found, and the counts add up to the item's refs.
 */
function agrees(rec: ExtentRecord, found: RecordedRef[]): boolean {
  const rs = rec.recorded;
  if (rs.length === 0 || rs.length > 8 || found.length === 0) return false;
  let matched = 0;
  for (let i = 0; i < rs.length; i++) {
    const r = rs[i]!;
    for (let j = 0; j < i; j++) if (sameRef(rs[j]!, r)) return false;
    let n = 0;
    for (const f of found) if (sameRef(r, f)) n += refCount(f);
    if (n !== refCount(r)) return false;
    matched += n;
  }
  let all = 0;
  for (const f of found) all += refCount(f);
  return all === matched && BigInt(all) === rec.refs;
}

/** True when a recorded reference that the walk did not find may still be real. */
function unverifiable(ctx: CheckContext, r: RecordedRef): boolean {
  if (!ctx.treesOk) return true;
  switch (r.kind) {
    case 'tree':
    case 'data':
      return ctx.unverifiableRoots.has(r.root);
    case 'shared-block':
    case 'shared-data':
      return ctx.unverifiableRoots.size > 0 && !ctx.reachedBlocks.has(addrKey(fromBig(r.parent)));
  }
}

export function compareExtents(ctx: CheckContext): void {
  const { report, found } = ctx;
  if (!ctx.extentTreeOk) return;
  for (const rec of ctx.extents.values()) {
    const id = addrKey(fromBig(rec.bytenr));
    const f = rec.metadata ? found.blocks.get(id) : found.data.get(id);
    if (f && agrees(rec, f.refs) && (rec.metadata ? rec.level === undefined || (f as { level: number }).level === rec.level
      : (f as { numBytes: bigint; otherSizes?: bigint[] }).numBytes === rec.numBytes && !(f as { otherSizes?: bigint[] }).otherSizes)) continue;
    const want = tally(rec.recorded);
    const have = tally(f?.refs ?? []);
    let missing = 0;
    let extra = 0;
    let forgiven = 0;
    const details: string[] = [];
    for (const [k, w] of want) {
      const h = have.get(k)?.n ?? 0;
      if (h >= w.n) continue;
      if (unverifiable(ctx, w.ref)) { forgiven += w.n - h; continue; }
      missing += w.n - h;
      details.push(`${k}: recorded ${w.n}, found ${h}`);
    }
    for (const [k, h] of have) {
      const w = want.get(k)?.n ?? 0;
      if (h.n <= w) continue;
      extra += h.n - w;
      details.push(`${k}: recorded ${w}, found ${h.n}`);
    }
    const foundTotal = [...have.values()].reduce((n, x) => n + x.n, 0);
    if (missing || extra || (ctx.treesOk && BigInt(foundTotal + forgiven) !== rec.refs)) {
      const msg = BigInt(foundTotal + forgiven) !== rec.refs
        ? `ref mismatch on [${rec.bytenr} ${rec.numBytes}] extent item ${rec.refs}, found ${foundTotal}`
        : `backpointer mismatch on [${rec.bytenr} ${rec.numBytes}]`;
      report.error('ref-mismatch', details.length ? `${msg} (${details.join('; ')})` : msg, recordWhere(rec));
    }
    if (rec.metadata && f && 'level' in f && rec.level !== undefined && f.level !== rec.level) {
      report.error('bad-backref-level', `tree block ${rec.bytenr} has bad backref level, has ${rec.level} expect ${f.level}`, recordWhere(rec));
    }
    if (!rec.metadata && f && 'numBytes' in f) {
      for (const n of [f.numBytes, ...(f.otherSizes ?? [])]) {
        if (n !== rec.numBytes) {
          report.error('file-extent-size', `file extent items reference [${rec.bytenr} ${n}] but the extent item is [${rec.bytenr} ${rec.numBytes}]`, recordWhere(rec));
        }
      }
    }
  }
  for (const [id, f] of found.blocks) {
    if (ctx.extents.has(id)) continue;
    const bytenr = keyAddr(id);
    report.error('ref-mismatch', `ref mismatch on [${bytenr} ${ctx.info.nodesize}] extent item 0, found ${f.refs.length}`, { tree: f.tree, block: bytenr });
  }
  for (const [id, f] of found.data) {
    if (ctx.extents.has(id)) continue;
    const bytenr = keyAddr(id);
    const n = f.refs.reduce((s, r) => s + refCount(r), 0);
    report.error('ref-mismatch', `ref mismatch on [${bytenr} ${f.numBytes}] extent item 0, found ${n}`, foundWhere(f));
  }
}

/** The block group holding `bytenr`, by binary search over the sorted list. */
export function blockGroupOf(bgs: BlockGroupRecord[], bytenr: bigint): BlockGroupRecord | undefined {
  let lo = 0;
  let hi = bgs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const bg = bgs[mid]!;
    if (bytenr < bg.start) hi = mid - 1;
    else if (bytenr >= bg.start + bg.length) lo = mid + 1;
    else return bg;
  }
  return undefined;
}

export function checkBlockGroupUsage(ctx: CheckContext): void {
  const { report, info } = ctx;
  if (!ctx.extentTreeOk) return;
  const used = new Map<bigint, bigint>();
  const mixed = (info.sb.incompat_flags & FEATURE_INCOMPAT.MIXED_GROUPS) !== 0n;
  for (const rec of ctx.extents.values()) {
    const bg = blockGroupOf(ctx.blockGroups, rec.bytenr);
    if (!bg) {
      report.error('extent-outside-block-group', `extent [${rec.bytenr} ${rec.numBytes}] is not inside any block group`, recordWhere(rec));
      continue;
    }
    if (rec.bytenr + rec.numBytes > bg.start + bg.length) {
      report.error('extent-crosses-block-group', `extent [${rec.bytenr} ${rec.numBytes}] crosses the end of block group [${bg.start} ${bg.length}]`, recordWhere(rec));
    }
    const wantType = rec.metadata ? BLOCK_GROUP.METADATA | BLOCK_GROUP.SYSTEM : BLOCK_GROUP.DATA;
    if (!mixed && (bg.flags & wantType) === 0n) {
      report.error('extent-wrong-block-group', `${rec.metadata ? 'tree block' : 'data extent'} [${rec.bytenr} ${rec.numBytes}] lies in block group [${bg.start} ${bg.length}] of type 0x${bg.flags.toString(16)}`, recordWhere(rec));
    }
    used.set(bg.start, (used.get(bg.start) ?? 0n) + rec.numBytes);
  }
  let total = 0n;
  for (const bg of ctx.blockGroups) {
    const u = used.get(bg.start) ?? 0n;
    total += u;
    if (u !== bg.used) {
      report.error('block-group-used', `block group [${bg.start} ${bg.length}] used ${bg.used} but extent items used ${u}`, { key: bg.key });
    }
  }
  if (total !== info.sb.bytes_used) {
    report.error('super-bytes-used', `super bytes used ${info.sb.bytes_used} mismatches actual used ${total}`);
  }
}
