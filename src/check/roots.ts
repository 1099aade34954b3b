/**
 * The root tree's own bookkeeping: which trees exist (the newest ROOT_ITEM
 * of each), that each root item is sane, and how subvolumes are linked.
 *
 * A subvolume's name is one backref keyed by (parent tree, directory, name)
 * that four items record: ROOT_REF in the parent, ROOT_BACKREF in the child,
 * and the DIR_ITEM and DIR_INDEX entries in the parent's directory, all with
 * the same index. A name counts (is "reachable") when its ROOT_REF and
 * DIR_ITEM exist and its parent is itself reachable from the top level; a
 * live subvolume nobody reaches needs an orphan item (it is being deleted),
 * and a reachable name must have all four items. A deleted subvolume still
 * being dropped (refs 0, maybe an orphan item, maybe a drop_progress) is valid.
 */
import { FEATURE_COMPAT_RO, KEY, MAX_LEVEL, OBJ } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeRootItem } from '../format/items/root-item.js';
import { decodeRootRef } from '../format/items/root-ref.js';
import { iterItems } from '../tree/search.js';
import type { CheckContext, RootRecord } from './context.js';
import type { SubvolEntry } from './inodes.js';

const U64_MAX = (1n << 64n) - 1n;

interface RefRec { parent: bigint; child: bigint; dirid: bigint; sequence: bigint; name: Buffer; kind: 'ref' | 'backref' }

const saved: WeakMap<CheckContext, { refs: RefRec[]; orphans: Set<bigint> }> = new WeakMap();

/** Global roots (one per filesystem unless extent-tree-v2): their ROOT_ITEM key offset is 0. */
function isGlobalRoot(ctx: CheckContext, objectid: bigint): boolean {
  if (objectid === OBJ.EXTENT_TREE || objectid === OBJ.CSUM_TREE) return true;
  return objectid === OBJ.FREE_SPACE_TREE && (ctx.info.sb.compat_ro_flags & FEATURE_COMPAT_RO.FREE_SPACE_TREE) !== 0n;
}

/** Reads the root tree's ROOT_ITEMs into ctx.roots (and remembers the refs for checkRootRefs). */
export async function loadRoots(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const byId = new Map<string, RootRecord>();
  const refs: RefRec[] = [];
  const orphans = new Set<bigint>();
  try {
    for await (const it of iterItems(info.reader, info.treeRoot)) {
      const k = it.key;
      const where = { tree: OBJ.ROOT_TREE, block: it.block.bytenr, key: k };
      try {
        if (k.type === KEY.ROOT_ITEM) {
          const item = decodeRootItem(it.data);
          if (isGlobalRoot(ctx, k.objectid) && k.offset !== 0n) {
            report.error('root-item', `global root with too large of an offset [${k.objectid} ${k.offset}]`, where);
            continue;
          }
          // Roots are looked up by searching for (id, ROOT_ITEM, -1) and stepping back; an exact hit
          // there is a root no lookup can use (the kernel refuses it with EUCLEAN).
          if (k.offset === U64_MAX) {
            report.error('root-item', `root item of tree ${k.objectid} has key offset ${U64_MAX}, which no root can have`, where);
          }
          if (item.bytenr % BigInt(info.sectorsize) !== 0n) {
            report.error('root-item', `tree block bytenr ${item.bytenr} is not aligned to sectorsize ${info.sectorsize} (root item of tree ${k.objectid})`, where);
            continue;
          }
          if (item.level >= MAX_LEVEL || item.drop_level >= MAX_LEVEL) {
            report.error('root-item', `root item of tree ${k.objectid} has invalid level ${item.level} or drop level ${item.drop_level}`, where);
            continue;
          }
          const partiallyDropped = item.drop_progress.objectid !== 0n;
          byId.set(k.objectid === OBJ.TREE_RELOC ? `reloc ${k.offset}` : `${k.objectid}`, { objectid: k.objectid, offset: k.offset, item, partiallyDropped });
        } else if (k.type === KEY.ROOT_REF || k.type === KEY.ROOT_BACKREF) {
          const r = decodeRootRef(it.data);
          const [parent, child] = k.type === KEY.ROOT_REF ? [k.objectid, k.offset] : [k.offset, k.objectid];
          refs.push({ parent, child, dirid: r.dirid, sequence: r.sequence, name: r.name, kind: k.type === KEY.ROOT_REF ? 'ref' : 'backref' });
        } else if (k.objectid === OBJ.ORPHAN && k.type === KEY.ORPHAN_ITEM) {
          orphans.add(k.offset);
        }
      } catch (e) {
        report.fromError(e, 'root-item', where);
      }
    }
  } catch (e) {
    ctx.treesOk = false;
    report.fromError(e, 'root-tree-unreadable', { tree: OBJ.ROOT_TREE });
  }
  // Reloc trees share one objectid; each (keyed by its source root) is a tree of its own.
  ctx.roots = [...byId.values()];
  saved.set(ctx, { refs, orphans });
}

/** One name of a subvolume, gathered from the four items that record it. */
interface Name {
  parent: bigint;
  dir: bigint;
  name: Buffer;
  indexes: Set<bigint>;
  dirItems: number;
  dirIndexes: number;
  forward: number;
  back: number;
  reachable: boolean;
}

/**
 * Checks subvolume links: the root tree's ROOT_REF/ROOT_BACKREF items and
 * the subvolume entries the fs tree pass found (`entries`).
 */
export function checkRootRefs(ctx: CheckContext, entries: SubvolEntry[]): void {
  const { report } = ctx;
  const s = saved.get(ctx);
  if (!s) return;
  const subvols = new Map<bigint, { rootItem: boolean; names: Map<string, Name> }>();
  const sub = (id: bigint) => {
    let r = subvols.get(id);
    if (!r) subvols.set(id, r = { rootItem: false, names: new Map() });
    return r;
  };
  const nameOf = (child: bigint, parent: bigint, dir: bigint, name: Buffer): Name => {
    const names = sub(child).names;
    const id = `${parent}/${dir}/${name.toString('latin1')}`;
    let n = names.get(id);
    if (!n) names.set(id, n = { parent, dir, name, indexes: new Set(), dirItems: 0, dirIndexes: 0, forward: 0, back: 0, reachable: false });
    return n;
  };
  // The top level is reachable by definition: it must have a live root item.
  sub(OBJ.FS_TREE);
  for (const r of ctx.roots) {
    if (r.objectid === OBJ.TREE_RELOC || !(r.objectid === OBJ.FS_TREE || r.objectid === OBJ.DATA_RELOC_TREE || (r.objectid >= OBJ.FIRST_FREE && r.objectid <= OBJ.LAST_FREE))) continue;
    // A dropped subvolume's records do not exist as far as names go.
    if (r.item.refs > 0) sub(r.objectid).rootItem = true;
  }
  for (const r of s.refs) {
    const n = nameOf(r.child, r.parent, r.dirid, r.name);
    n.indexes.add(r.sequence);
    if (r.kind === 'ref') n.forward++; else n.back++;
  }
  const forwardPairs = new Set(s.refs.filter((r) => r.kind === 'ref').map((r) => `${r.parent}/${r.child}`));
  const backParents = new Map<bigint, Set<bigint>>();
  for (const r of s.refs) {
    if (r.kind !== 'backref') continue;
    let p = backParents.get(r.child);
    if (!p) backParents.set(r.child, p = new Set());
    p.add(r.parent);
  }
  for (const e of entries) {
    // An entry counts from a tree that links the subvolume, or for a subvolume no tree claims
    // (a snapshot copies its source's entries for nested subvolumes, which link elsewhere).
    if (!forwardPairs.has(`${e.tree}/${e.child}`)) {
      const parents = backParents.get(e.child);
      if (parents && !parents.has(e.tree)) continue;
    }
    const n = nameOf(e.child, e.tree, e.dir, e.name);
    if (e.kind === 'item') n.dirItems++;
    else { n.dirIndexes++; if (e.index !== undefined) n.indexes.add(e.index); }
  }
  // Reachability: from the top level down, a name counts if its parent is reachable.
  const reach = new Map<bigint, number>();
  for (const [id, r] of subvols) {
    let c = 0;
    for (const n of r.names.values()) { n.reachable = n.forward > 0 && n.dirItems > 0; if (n.reachable) c++; }
    reach.set(id, c);
  }
  reach.set(OBJ.FS_TREE, 1);
  for (let changed = true; changed;) {
    changed = false;
    for (const [id, r] of subvols) {
      if (id === OBJ.FS_TREE || (reach.get(id) ?? 0) === 0) continue;
      for (const n of r.names.values()) {
        if (!n.reachable || (reach.get(n.parent) ?? 0) > 0) continue;
        n.reachable = false;
        const left = (reach.get(id) ?? 1) - 1;
        reach.set(id, left);
        if (left === 0) changed = true;
      }
    }
  }
  for (const [id, r] of subvols) {
    const where = { tree: OBJ.ROOT_TREE, key: key(id, KEY.ROOT_ITEM, 0n) };
    const found = reach.get(id) ?? 0;
    if (found === 0 && id >= OBJ.FIRST_FREE && id <= OBJ.LAST_FREE) {
      // Unreachable: fine while it is being deleted (orphan item), or if it is only a stale entry.
      if (s.orphans.has(id) || !r.rootItem) continue;
      report.error('subvol-unreferenced', `fs tree ${id} not referenced`, where);
    }
    if (found > 0 && !r.rootItem) {
      report.error('subvol-no-root-item', `fs tree ${id} refs ${found} not found`, where);
    }
    for (const n of r.names.values()) {
      if (!n.reachable) continue;
      const errs: string[] = [];
      if (n.dirItems === 0) errs.push('no dir item');
      if (n.dirIndexes === 0) errs.push('no dir index');
      if (n.back === 0) errs.push('no root backref');
      if (n.forward === 0) errs.push('no root ref');
      if (n.dirItems > 1) errs.push('dup dir item');
      if (n.dirIndexes > 1) errs.push('dup dir index');
      if (n.forward > 1) errs.push('dup root ref');
      if (n.back > 1) errs.push('dup root backref');
      if (n.indexes.size > 1) errs.push('index mismatch');
      if (!errs.length) continue;
      const code = errs[0] === 'no root backref' ? 'no-root-backref' : errs[0] === 'no root ref' ? 'no-root-ref'
        : errs[0] === 'no dir index' ? 'root-ref-no-dir-index' : 'root-ref-mismatch';
      report.error(code, `unresolved ref root ${n.parent} dir ${n.dir} index ${[...n.indexes].join('/') || 0} namelen ${n.name.length} name ${n.name.toString('utf8')} of fs tree ${id}, ${errs.join(', ')}`, where);
    }
  }
}
