/**
 * Quota groups against the extents they account. Every extent is charged to
 * the subvolumes that can reach it: directly by a backref naming a
 * subvolume, through a shared backref to every subvolume that reaches the
 * parent block, and implicitly to every subvolume reaching any interior
 * node above it. Each level-0 qgroup (0/subvolid) and, through relations,
 * its ancestors then refer to the extent; a qgroup that all of the
 * extent's subvolumes reach holds it exclusively. The sums must equal the
 * referenced and exclusive bytes in each QGROUP_INFO, unless the status
 * item says a rescan is running or the numbers are known to be stale.
 */
import { FEATURE_INCOMPAT, OBJ, KEY, QGROUP_STATUS_FLAG } from '../format/constants.js';
import { iterItems } from '../tree/search.js';
import type { BlockShape, CheckContext } from './context.js';
import { shapeOf } from './trees.js';
import { blockGroupOf, rootLocation } from './extents.js';

interface Qgroup {
  id: bigint;
  diskRfer: bigint;
  diskExcl: bigint;
  rfer: bigint;
  excl: bigint;
  parents: Qgroup[];
  subvolExists: boolean;
  key: { objectid: bigint; type: number; offset: bigint };
}

/** A backref as the accounting sees it: a root, or a parent block. */
interface Ref { root: bigint; parent: bigint }

const LEVEL_SHIFT = 48n;
const fmtId = (id: bigint) => `${id >> LEVEL_SHIFT}/${id & ((1n << LEVEL_SHIFT) - 1n)}`;

/** Subvolume trees that quotas account (the relocation trees do not count). */
const isQuotaTree = (id: bigint) => id === OBJ.FS_TREE || (id >= OBJ.FIRST_FREE && id < 1n << 63n);

/** Children (node) or data extents (leaf) of a block the tree walk did not expand (a tree being dropped). */
async function readShape(ctx: CheckContext, bytenr: bigint): Promise<BlockShape | undefined> {
  try {
    const b = await ctx.info.reader.read({ bytenr });
    const shape = shapeOf(b);
    ctx.shapes!.set(bytenr, shape);
    return shape;
  } catch {
    return undefined;
  }
}

export async function checkQgroups(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const loc = rootLocation(ctx, OBJ.QUOTA_TREE);
  // The SIMPLE_QUOTA feature bit is set when simple quotas are enabled and cleared when quotas are
  // disabled: it claims a quota tree whose status says simple mode (and it locks out every tool
  // that does not know simple quotas, btrfs check 6.2 among them).
  const squota = (info.sb.incompat_flags & FEATURE_INCOMPAT.SIMPLE_QUOTA) !== 0n;
  if (!loc) {
    if (squota) report.error('simple-quota', 'incompat feature SIMPLE_QUOTA is set but quotas are not enabled (no quota tree)', { tree: OBJ.ROOT_TREE });
    return;
  }
  if (!ctx.extentTreeOk || !ctx.shapes) {
    report.warning('qgroup-skipped', 'quota groups not checked: the extent tree or some tree could not be read');
    return;
  }
  const groups = new Map<bigint, Qgroup>();
  const relations: { member: bigint; parent: bigint; key: { objectid: bigint; type: number; offset: bigint } }[] = [];
  let flags = 0n;
  const subvols = new Set(ctx.roots.map((r) => r.objectid));
  try {
    for await (const it of iterItems(info.reader, loc)) {
      const k = it.key;
      if (k.type === KEY.QGROUP_STATUS && it.data.length >= 24) flags = it.data.readBigUInt64LE(16);
      else if (k.type === KEY.QGROUP_INFO) {
        if (it.data.length < 40) {
          report.error('qgroup-item', `qgroup info ${fmtId(k.offset)} is ${it.data.length} bytes, expect 40`, { tree: OBJ.QUOTA_TREE, block: it.block.bytenr, key: k });
          continue;
        }
        groups.set(k.offset, {
          id: k.offset, diskRfer: it.data.readBigUInt64LE(8), diskExcl: it.data.readBigUInt64LE(24), rfer: 0n, excl: 0n, parents: [],
          subvolExists: subvols.has(k.offset), key: k,
        });
      } else if (k.type === KEY.QGROUP_RELATION && k.objectid < k.offset) {
        relations.push({ member: k.objectid, parent: k.offset, key: k });
      }
    }
  } catch (e) {
    report.fromError(e, 'quota-tree-unreadable', { tree: OBJ.QUOTA_TREE });
    return;
  }
  const simple = (flags & QGROUP_STATUS_FLAG.SIMPLE_MODE) !== 0n;
  if (simple !== squota) {
    report.error('simple-quota', `qgroup status flag SIMPLE_MODE is ${simple ? 'set' : 'clear'} but incompat feature SIMPLE_QUOTA is ${squota ? 'set' : 'clear'}`, { tree: OBJ.QUOTA_TREE });
  }
  if (simple) {
    // Simple quotas charge each extent to the subvolume named by its owner ref, from the
    // generation they were enabled: a different accounting from the one below.
    report.warning('qgroup-skipped', 'simple quota accounting is not verified');
    return;
  }
  for (const r of relations) {
    const m = groups.get(r.member);
    const p = groups.get(r.parent);
    if (!m || !p) {
      report.error('qgroup-relation', `failed to add qgroup relation, member=${fmtId(r.member)} parent=${fmtId(r.parent)}: no such qgroup`, { tree: OBJ.QUOTA_TREE, key: r.key });
      return;
    }
    m.parents.push(p);
  }

  // Every backref of every extent inside a block group, deduplicated, plus the implied ones below interior nodes.
  const refs = new Map<bigint, { numBytes: bigint; refs: Ref[]; seen: Set<string> }>();
  const addRef = (bytenr: bigint, numBytes: bigint, root: bigint, parent: bigint) => {
    let e = refs.get(bytenr);
    if (!e) refs.set(bytenr, e = { numBytes, refs: [], seen: new Set() });
    const id = `${root}:${parent}`;
    if (e.seen.has(id)) return;
    e.seen.add(id);
    e.refs.push({ root, parent });
  };
  const interior: bigint[] = [];
  for (const rec of ctx.extents.values()) {
    if (!blockGroupOf(ctx.blockGroups, rec.bytenr)) continue;
    for (const r of rec.recorded) {
      if (r.kind === 'tree' || r.kind === 'data') addRef(rec.bytenr, rec.numBytes, r.root, 0n);
      else addRef(rec.bytenr, rec.numBytes, 0n, r.parent);
    }
    if (rec.metadata && (rec.level ?? 0) > 0) interior.push(rec.bytenr);
  }
  /** The tree a block belongs to, following first backrefs up to a root. */
  const firstRoot = (bytenr: bigint): bigint | undefined => {
    const seen = new Set<bigint>();
    for (let b = bytenr; ;) {
      const r = refs.get(b)?.refs[0];
      if (!r) return undefined;
      if (r.root) return r.root;
      if (r.parent === b || seen.has(b)) return OBJ.TREE_RELOC;
      seen.add(b);
      b = r.parent;
    }
  };
  const nodesize = BigInt(info.nodesize);
  for (const top of interior) {
    const root = firstRoot(top);
    if (root === undefined || !isQuotaTree(root)) continue;
    // Everything below an interior node is reachable from wherever the node is.
    const stack = [top];
    const visited = new Set<bigint>();
    while (stack.length) {
      const b = stack.pop()!;
      if (visited.has(b)) continue;
      visited.add(b);
      if (b !== top) addRef(b, nodesize, 0n, top);
      const shape = ctx.shapes.get(b) ?? await readShape(ctx, b);
      if (!shape) continue;
      if (shape.children) for (const c of shape.children) stack.push(c);
      if (shape.extents) for (let i = 0; i < shape.extents.length; i += 2) addRef(shape.extents[i]!, shape.extents[i + 1]!, 0n, top);
    }
  }

  // The subvolumes that reach a block, memoized: shared subtrees are asked about again and again.
  const memo = new Map<bigint, Set<bigint>>();
  const active = new Set<bigint>();
  let missingParent: bigint | undefined;
  const rootsOf = (bytenr: bigint): Set<bigint> => {
    const m = memo.get(bytenr);
    if (m) return m;
    const out = new Set<bigint>();
    const e = refs.get(bytenr);
    if (!e) { missingParent ??= bytenr; return out; }
    if (active.has(bytenr)) return out;
    active.add(bytenr);
    for (const r of e.refs) {
      if (r.root) { if (isQuotaTree(r.root)) out.add(r.root); }
      else if (r.parent !== bytenr) for (const x of rootsOf(r.parent)) out.add(x);
    }
    active.delete(bytenr);
    memo.set(bytenr, out);
    return out;
  };

  for (const [bytenr, e] of refs) {
    const roots = new Set<bigint>();
    for (const r of e.refs) {
      if (r.root) { if (isQuotaTree(r.root)) roots.add(r.root); }
      else for (const x of rootsOf(r.parent)) roots.add(x);
    }
    if (missingParent !== undefined) {
      report.error('qgroup-parent', `bytenr ref not found for parent ${missingParent} (while accounting extent ${bytenr})`, { tree: OBJ.EXTENT_TREE });
      return;
    }
    // How many of the extent's subvolumes reach each qgroup.
    const reach = new Map<Qgroup, number>();
    for (const root of roots) {
      const g = groups.get(root);
      if (!g) continue;
      const mine = new Set<Qgroup>([g]);
      const queue = [g];
      while (queue.length) {
        const q = queue.pop()!;
        for (const p of q.parents) if (!mine.has(p)) { mine.add(p); queue.push(p); }
      }
      for (const q of mine) reach.set(q, (reach.get(q) ?? 0) + 1);
    }
    for (const [q, n] of reach) {
      q.rfer += e.numBytes;
      if (n === roots.size) q.excl += e.numBytes;
    }
  }

  const rescan = (flags & QGROUP_STATUS_FLAG.RESCAN) !== 0n;
  const stale = (flags & QGROUP_STATUS_FLAG.INCONSISTENT) !== 0n;
  for (const g of [...groups.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    if (g.rfer === g.diskRfer && g.excl === g.diskExcl) continue;
    const msg = `Counts for qgroup id: ${fmtId(g.id)} are different: referenced ${g.rfer} on disk ${g.diskRfer}, exclusive ${g.excl} on disk ${g.diskExcl}`;
    const where = { tree: OBJ.QUOTA_TREE, key: g.key };
    // A rescan in progress or an accounting known to be stale explains any difference.
    if (rescan || stale) report.warning('qgroup-counts', `${msg} (${rescan ? 'rescan running' : 'qgroups marked inconsistent'})`, where);
    else report.error('qgroup-counts', msg, where);
  }
}
