/**
 * The root tree's own bookkeeping: which trees exist (the newest ROOT_ITEM
 * of each), that each root item is sane, that every ROOT_REF has its
 * ROOT_BACKREF twin and the directory entry it describes, and that a
 * subvolume's refs count the names it has. A deleted subvolume still being
 * dropped (refs 0, maybe an orphan item, maybe a drop_progress) is valid.
 */
import { KEY, MAX_LEVEL, OBJ } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeRootItem } from '../format/items/root-item.js';
import { decodeRootRef, type RootRef } from '../format/items/root-ref.js';
import { decodeDirItems } from '../format/items/dir-item.js';
import { iterItems, lookupItem } from '../tree/search.js';
import type { CheckContext, RootRecord } from './context.js';
import { isFsTree } from './inodes.js';

interface RefRec { parent: bigint; child: bigint; ref: RootRef }

const refs: WeakMap<CheckContext, { fwd: RefRec[]; back: RefRec[]; orphans: Set<bigint> }> = new WeakMap();

/** Reads the root tree's ROOT_ITEMs into ctx.roots (and remembers the refs for checkRootRefs). */
export async function loadRoots(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const byId = new Map<string, RootRecord>();
  const fwd: RefRec[] = [];
  const back: RefRec[] = [];
  const orphans = new Set<bigint>();
  try {
    for await (const it of iterItems(info.reader, info.treeRoot)) {
      const k = it.key;
      const where = { tree: OBJ.ROOT_TREE, block: it.block.bytenr, key: k };
      try {
        if (k.type === KEY.ROOT_ITEM) {
          const item = decodeRootItem(it.data);
          if (item.bytenr % BigInt(info.sectorsize) !== 0n) {
            report.error('root-item', `tree block bytenr ${item.bytenr} is not aligned to sectorsize ${info.sectorsize} (root item of tree ${k.objectid})`, where);
            continue;
          }
          if (item.level >= MAX_LEVEL || item.drop_level >= MAX_LEVEL) {
            report.error('root-item', `root item of tree ${k.objectid} has invalid level ${item.level} or drop level ${item.drop_level}`, where);
            continue;
          }
          if (item.generation > info.sb.generation) {
            report.error('root-item', `root item of tree ${k.objectid} has generation ${item.generation} newer than the superblock's ${info.sb.generation}`, where);
          }
          const partiallyDropped = item.drop_progress.objectid !== 0n;
          byId.set(k.objectid === OBJ.TREE_RELOC ? `reloc ${k.offset}` : `${k.objectid}`, { objectid: k.objectid, offset: k.offset, item, partiallyDropped });
        } else if (k.type === KEY.ROOT_REF) {
          fwd.push({ parent: k.objectid, child: k.offset, ref: decodeRootRef(it.data) });
        } else if (k.type === KEY.ROOT_BACKREF) {
          back.push({ parent: k.offset, child: k.objectid, ref: decodeRootRef(it.data) });
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
  refs.set(ctx, { fwd, back, orphans });
}

const sameRef = (a: RootRef, b: RootRef) => a.dirid === b.dirid && a.sequence === b.sequence && a.name.equals(b.name);

export async function checkRootRefs(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const r = refs.get(ctx);
  if (!r) return;
  const name = (x: RefRec) => x.ref.name.toString('utf8');
  for (const f of r.fwd) {
    const b = r.back.find((x) => x.parent === f.parent && x.child === f.child);
    const where = { tree: OBJ.ROOT_TREE, key: key(f.parent, KEY.ROOT_REF, f.child) };
    if (!b) {
      report.error('no-root-backref', `unresolved ref root ${f.child} dir ${f.ref.dirid} index ${f.ref.sequence} name ${name(f)}, no root backref`, where);
    } else if (!sameRef(f.ref, b.ref)) {
      report.error('root-ref-mismatch', `root ref ${f.parent} -> ${f.child} (dir ${f.ref.dirid} index ${f.ref.sequence} name ${name(f)}) differs from its backref (dir ${b.ref.dirid} index ${b.ref.sequence} name ${name(b)})`, where);
    }
    const parent = ctx.roots.find((x) => x.objectid === f.parent);
    if (!parent || parent.partiallyDropped) continue;
    const loc = { objectid: parent.objectid, bytenr: parent.item.bytenr, level: parent.item.level, generation: parent.item.generation };
    try {
      const it = await lookupItem(info.reader, loc, key(f.ref.dirid, KEY.DIR_INDEX, f.ref.sequence));
      const d = it && decodeDirItems(it.data)[0];
      if (!d || d.location.objectid !== f.child || d.location.type !== KEY.ROOT_ITEM || !d.name.equals(f.ref.name)) {
        report.error('root-ref-no-dir-index', `unresolved ref root ${f.child} dir ${f.ref.dirid} index ${f.ref.sequence} name ${name(f)}, no dir index in root ${f.parent}`, where);
      }
    } catch (e) {
      report.fromError(e, 'root-ref-lookup', { tree: f.parent });
    }
  }
  for (const b of r.back) {
    if (!r.fwd.some((x) => x.parent === b.parent && x.child === b.child)) {
      report.error('no-root-ref', `unresolved ref root ${b.child} dir ${b.ref.dirid} index ${b.ref.sequence} name ${name(b)}, no root ref`,
        { tree: OBJ.ROOT_TREE, key: key(b.child, KEY.ROOT_BACKREF, b.parent) });
    }
  }
  for (const root of ctx.roots) {
    if (!isFsTree(root.objectid) || root.objectid < OBJ.FIRST_FREE || root.objectid === OBJ.DATA_RELOC_TREE) continue;
    const names = r.back.filter((x) => x.child === root.objectid).length;
    const where = { tree: OBJ.ROOT_TREE, key: key(root.objectid, KEY.ROOT_ITEM, root.offset) };
    if (root.item.refs === 0) continue;
    if (names !== root.item.refs) {
      report.error('root-refs', `root ${root.objectid} has refs ${root.item.refs} but ${names} root backref(s)`, where);
    }
  }
}
