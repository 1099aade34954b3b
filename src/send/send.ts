/**
 * `btrfs send` from an image: a read-only snapshot as a stream of commands
 * that `btrfs receive` replays, in full or as the difference from a parent
 * snapshot the receiver already has.
 *
 *   await send(fs, { snapshot: 257n, parent: 256n, out: process.stdout });
 *
 * Three stages:
 *  1. what differs: for a full send every inode of the snapshot; for an
 *     incremental one the items the tree comparison (tree-diff.ts) reports,
 *     grouped by inode, with both versions of each inode read;
 *  2. names (namespace.ts): creations, renames, links, unlinks, rmdirs,
 *     until the receiver's tree has the snapshot's names;
 *  3. contents (contents.ts), inode by inode in number order: xattrs, data
 *     (only changed ranges, clones where possible), size, owner, mode,
 *     times; then the times of directories whose entries changed.
 * The guards (guards.ts) hold for the whole send and are undone on every
 * exit path.
 */
import { BtrfsError } from '../util/errors.js';
import { isZero } from '../util/bytes.js';
import { KEY, OBJ, ROOT_DIR_INO, S_IFMT } from '../format/constants.js';
import { decompressExtent } from '../util/compress/index.js';
import { key, KEY_MAX } from '../format/key.js';
import { decodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { decodeInodeRefs } from '../format/items/inode-ref.js';
import { decodeInodeExtrefs } from '../format/items/inode-extref.js';
import { decodeRootRef } from '../format/items/root-ref.js';
import { decodeFileExtentItem, isInlineExtent } from '../format/items/file-extent-item.js';
import type { RootItem } from '../format/items/root-item.js';
import { iterItems } from '../tree/search.js';
import { rootLocation, type FsInfo } from '../tree/fs-info.js';
import type { Filesystem } from '../fs/filesystem.js';
import type { RootLocks } from '../subvol/root-lock.js';
import { TreeView, isDirMode, type Link, type Xattr } from './inodes.js';
import { decodeDirItems } from '../format/items/dir-item.js';
import { diffTrees, type DiffStats } from './tree-diff.js';
import { NamespacePlanner, type InodeChange, type InodeVersion } from './namespace.js';
import { ContentSender, normalizeRanges, type ExtentRef } from './contents.js';
import { CloneFinder, type CloneRoot } from './clone.js';
import { StreamWriter, emptyStats, type SendStats } from './stream-writer.js';
import { acquireSendGuards } from './guards.js';

export type { SendStats } from './stream-writer.js';

export interface SendOptions {
  /** subvolume id of the read-only snapshot to send */
  snapshot: bigint;
  /** a read-only snapshot the receiver has: send only the difference */
  parent?: bigint;
  /** read-only snapshots the receiver has, whose extents may be cloned instead of sent */
  cloneSources?: bigint[];
  /** where the stream goes; written with backpressure */
  out: NodeJS.WritableStream;
  /** stream protocol version, 1 (default) or 2 */
  proto?: 1 | 2;
  /** NO_FILE_DATA: name changed ranges (UPDATE_EXTENT) instead of sending their bytes */
  noData?: boolean;
  /** the image's path: registers the send so other processes see it (see guards.ts) */
  imagePath?: string;
  /** this process's root_item_locks; without them the send counts itself only in private ones */
  locks?: RootLocks;
  /** end `out` after the stream (default true) */
  end?: boolean;
}

/** Protocol 1 receivers have a 64 KiB command buffer: the kernel sends 48 KiB of data per WRITE. */
const WRITE_V1 = 48 * 1024;
/** Protocol 2 commands may be larger; the kernel's buffer is 16 KiB + 128 KiB. */
const WRITE_V2 = 128 * 1024;

const FIRST_INO = ROOT_DIR_INO;
/** Inodes whose two versions are read at the same time. */
const LOAD_PARALLEL = 32;

interface Snapshot { id: bigint; item: RootItem; view: TreeView; uuid: Buffer }

async function openRoot(info: FsInfo, id: bigint): Promise<Snapshot> {
  const r = await info.findRoot(id);
  if (!r || r.item.refs === 0) throw new BtrfsError('ENOENT', `subvolume ${id} does not exist or is deleted`, { tree: id });
  return {
    id, item: r.item, view: new TreeView(info.reader, rootLocation(id, r.item)),
    // a snapshot that was itself received is known to receivers by the uuid it was received as
    uuid: isZero(r.item.received_uuid) ? r.item.uuid : r.item.received_uuid,
  };
}

async function subvolName(info: FsInfo, id: bigint): Promise<Buffer> {
  for await (const it of iterItems(info.reader, info.treeRoot, key(id, KEY.ROOT_BACKREF, 0n), key(id, KEY.ROOT_BACKREF, KEY_MAX.offset))) {
    return decodeRootRef(it.data).name;
  }
  throw new BtrfsError('ENOENT', `subvolume ${id} is not linked anywhere: it has no name to send it under`, { tree: id });
}

function version(item: InodeItem, links: Link[]): InodeVersion {
  return { gen: item.generation, mode: item.mode, rdev: item.rdev, links };
}

/** Link lists without the root directory's ".." self reference. */
function realLinks(ino: bigint, links: Link[]): Link[] {
  return ino === ROOT_DIR_INO ? [] : links;
}

/** Per inode, what the tree comparison saw change. */
interface Touched { ranges: [number, number][]; xattrs: boolean }

function extentRange(k: bigint, data: Buffer): [number, number] {
  const fe = decodeFileExtentItem(data);
  const start = Number(k);
  const len = Number(isInlineExtent(fe) ? fe.ram_bytes : fe.num_bytes);
  return [start, start + len];
}

/**
 * Writes the stream of `opts.snapshot` (full, or relative to `opts.parent`)
 * to `opts.out`. Resolves with what was sent once the stream is complete
 * (and `out` ended, unless `end: false`); rejects with BtrfsError — EPERM
 * or ENOENT from the guards, EIO when the consumer goes away — after
 * undoing the guards.
 */
export async function send(fs: Filesystem, opts: SendOptions): Promise<SendStats> {
  const t0 = performance.now();
  const proto = opts.proto ?? 1;
  if (proto !== 1 && proto !== 2) throw new BtrfsError('EINVAL', `send protocol ${String(proto)} is not supported (1 or 2)`);
  const clones = opts.cloneSources ?? [];
  const ids = [opts.snapshot, ...clones, ...(opts.parent !== undefined ? [opts.parent] : [])];
  if (opts.parent !== undefined && opts.parent === opts.snapshot) throw new BtrfsError('EINVAL', 'a snapshot cannot be its own parent');
  const guards = await acquireSendGuards(fs.info, ids, { locks: opts.locks, imagePath: opts.imagePath });
  const stats = emptyStats();
  let writer: StreamWriter | undefined;
  try {
    const out = (writer = new StreamWriter(opts.out, proto, stats));
    const info = guards.info;
    const snap = await openRoot(info, opts.snapshot);
    const parent = opts.parent !== undefined ? await openRoot(info, opts.parent) : undefined;
    const name = await subvolName(info, opts.snapshot);
    await out.header();
    if (parent) await out.snapshot(name, snap.uuid, snap.item.ctransid, parent.uuid, parent.item.ctransid);
    else await out.subvol(name, snap.uuid, snap.item.ctransid);

    let t = performance.now();
    const { changes, touched, items } = parent ? await incrementalChanges(info, snap, parent, stats) : await fullChanges(snap);
    stats.phases.changes = performance.now() - t;
    t = performance.now();
    const planner = new NamespacePlanner(out, parent?.view, changes, (ino) => symlinkTarget(info, snap.view, ino));
    await planner.run();
    stats.phases.names = performance.now() - t;
    t = performance.now();

    const processed = new Set<bigint>();
    const cloneRoots: CloneRoot[] = [];
    if (parent) cloneRoots.push({ view: parent.view, uuid: parent.uuid, ctransid: parent.item.ctransid, self: false });
    for (const id of clones) {
      if (id === opts.parent) continue;
      const c = id === opts.snapshot ? snap : await openRoot(info, id);
      if (id !== opts.snapshot) cloneRoots.push({ view: c.view, uuid: c.uuid, ctransid: c.item.ctransid, self: false });
    }
    cloneRoots.push({ view: snap.view, uuid: snap.uuid, ctransid: snap.item.ctransid, self: true });
    const finder = new CloneFinder(info.reader, await info.rootOf(OBJ.EXTENT_TREE), cloneRoots, info.sectorsize,
      (ino) => processed.has(ino) || (parent !== undefined && !changes.has(ino)));
    const contents = new ContentSender(info, out, snap.view, parent?.view, finder, {
      version: proto, noData: opts.noData ?? false, writeSize: proto >= 2 ? WRITE_V2 : WRITE_V1,
    });

    if (!parent) {
      // every inode is new: one walk over the tree hands each its items
      for await (const g of inodeGroups(snap.view, items)) {
        if (!changes.get(g.ino)?.cur) continue;
        out.check();
        await contents.send({
          ino: g.ino, path: await planner.finalPath(g.ino), cur: g.item, inherited: planner.inherited.get(g.ino),
          prefetched: { xattrs: g.xattrs, extents: g.extents },
        });
        processed.add(g.ino);
        stats.inodes++;
      }
    }
    const order = parent ? [...changes.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)) : [];
    for (const ino of order) {
      const c = changes.get(ino)!;
      if (!c.cur) continue;
      out.check();
      const cur = items?.get(ino)?.cur ?? (await snap.view.inode(ino));
      if (!cur) throw new BtrfsError('EUCLEAN', `send: inode ${ino} vanished from subvolume ${snap.id}`, { tree: snap.id });
      const fresh = !c.old || c.replaced;
      const tc = touched?.get(ino);
      await contents.send({
        ino, path: await planner.finalPath(ino), cur,
        old: fresh ? undefined : items!.get(ino)!.old,
        ranges: tc?.ranges, xattrsChanged: tc?.xattrs ?? false, inherited: planner.inherited.get(ino),
      });
      processed.add(ino);
      stats.inodes++;
    }
    // directories whose entries the names stage changed but whose inode did not
    for (const ino of await planner.touchedDirs()) {
      if (processed.has(ino)) continue;
      const it = await snap.view.inode(ino);
      if (!it) continue;
      await out.utimes(await planner.finalPath(ino), it.atime, it.mtime, it.ctime);
    }
    await out.end();
    await out.close(opts.end ?? true);
    stats.phases.contents = performance.now() - t;
    stats.elapsedMs = performance.now() - t0;
    return stats;
  } finally {
    writer?.detach();
    await guards.release();
  }
}

async function symlinkTarget(info: FsInfo, view: TreeView, ino: bigint): Promise<Buffer> {
  for await (const it of iterItems(info.reader, view.root, key(ino, KEY.EXTENT_DATA, 0n), key(ino, KEY.EXTENT_DATA, KEY_MAX.offset))) {
    const fe = decodeFileExtentItem(it.data);
    if (!isInlineExtent(fe)) throw new BtrfsError('EUCLEAN', `symlink inode ${ino} has a non-inline extent`, { tree: view.id, key: it.key });
    const item = await view.inode(ino);
    const data = fe.compression === 0 ? fe.data : decompressExtent(fe.compression, fe.data, Number(fe.ram_bytes), info.sectorsize, { inline: true });
    return data.subarray(0, Number(item?.size ?? fe.ram_bytes));
  }
  return Buffer.alloc(0);
}

/** The snapshot's inodes in number order, each with its item, xattrs and file extent items. */
async function* inodeGroups(view: TreeView, known: Map<bigint, { cur?: InodeItem }>): AsyncGenerator<{ ino: bigint; item: InodeItem; xattrs: Xattr[]; extents: ExtentRef[] }> {
  let cur: { ino: bigint; item: InodeItem; xattrs: Xattr[]; extents: ExtentRef[] } | undefined;
  for await (const it of iterItems(view.reader, view.root, key(FIRST_INO, KEY.INODE_ITEM, 0n), key(OBJ.LAST_FREE, 255, KEY_MAX.offset))) {
    const k = it.key;
    try {
      if (k.type === KEY.INODE_ITEM) {
        if (cur) yield cur;
        cur = { ino: k.objectid, item: known.get(k.objectid)?.cur ?? decodeInodeItem(it.data, 0), xattrs: [], extents: [] };
      } else if (cur && k.objectid === cur.ino) {
        if (k.type === KEY.XATTR_ITEM) for (const d of decodeDirItems(it.data)) cur.xattrs.push({ name: d.name, value: d.data });
        else if (k.type === KEY.EXTENT_DATA) cur.extents.push({ offset: Number(k.offset), fe: decodeFileExtentItem(it.data) });
      }
    } catch (e) {
      throw e instanceof BtrfsError ? e.withWhere({ tree: view.id, block: it.block.bytenr, key: k }) : e;
    }
  }
  if (cur) yield cur;
}

/** Every inode of the snapshot, as new. */
async function fullChanges(snap: Snapshot): Promise<{ changes: Map<bigint, InodeChange>; touched?: undefined; items: Map<bigint, { cur?: InodeItem; old?: InodeItem }> }> {
  const changes = new Map<bigint, InodeChange>();
  const items = new Map<bigint, { cur?: InodeItem; old?: InodeItem }>();
  let cur: { ino: bigint; v: InodeVersion } | undefined;
  const flush = (): void => {
    if (!cur) return;
    if (cur.ino === ROOT_DIR_INO) cur.v.links = [];
    // an inode without names (unlinked, kept by an open file when the snapshot was taken) is not in the tree a receiver sees
    if (cur.v.links.length > 0 || cur.ino === ROOT_DIR_INO) changes.set(cur.ino, { ino: cur.ino, cur: cur.v, replaced: false });
    cur = undefined;
  };
  const view = snap.view;
  for await (const it of iterItems(view.reader, view.root, key(FIRST_INO, KEY.INODE_ITEM, 0n), key(OBJ.LAST_FREE, 255, KEY_MAX.offset))) {
    const k = it.key;
    if (k.type === KEY.INODE_ITEM) {
      flush();
      const item = decodeInodeItem(it.data, 0);
      items.set(k.objectid, { cur: item });
      cur = { ino: k.objectid, v: version(item, []) };
    } else if (cur && k.objectid === cur.ino) {
      if (k.type === KEY.INODE_REF) for (const r of decodeInodeRefs(it.data)) cur.v.links.push({ dir: k.offset, name: r.name });
      else if (k.type === KEY.INODE_EXTREF) for (const r of decodeInodeExtrefs(it.data)) cur.v.links.push({ dir: r.parent, name: r.name });
    }
  }
  flush();
  if (!changes.has(ROOT_DIR_INO)) throw new BtrfsError('EUCLEAN', `subvolume ${snap.id} has no root directory`, { tree: snap.id });
  return { changes, items };
}

/** The inodes that differ between the snapshot and its parent, from the tree comparison. */
async function incrementalChanges(info: FsInfo, snap: Snapshot, parent: Snapshot, stats: SendStats): Promise<{
  changes: Map<bigint, InodeChange>;
  touched: Map<bigint, Touched>;
  items: Map<bigint, { cur?: InodeItem; old?: InodeItem }>;
}> {
  const touched = new Map<bigint, Touched>();
  const dstats: DiffStats = { blocksRead: 0, sharedSkipped: 0 };
  for await (const d of diffTrees(info.reader, snap.view.root, parent.view.root, dstats)) {
    const ino = d.key.objectid;
    if (ino < FIRST_INO || ino > OBJ.LAST_FREE) continue;
    let t = touched.get(ino);
    if (!t) touched.set(ino, (t = { ranges: [], xattrs: false }));
    if (d.key.type === KEY.XATTR_ITEM) t.xattrs = true;
    else if (d.key.type === KEY.EXTENT_DATA) {
      if (d.cur) t.ranges.push(extentRange(d.key.offset, d.cur));
      if (d.old) t.ranges.push(extentRange(d.key.offset, d.old));
    }
  }
  stats.diffBlocks = dstats.blocksRead;
  stats.sharedSubtrees = dstats.sharedSkipped;

  const changes = new Map<bigint, InodeChange>();
  const items = new Map<bigint, { cur?: InodeItem; old?: InodeItem }>();
  const load = async (ino: bigint): Promise<InodeChange> => {
    const known = changes.get(ino);
    if (known) return known;
    const [ci, oi] = await Promise.all([snap.view.inode(ino), parent.view.inode(ino)]);
    const [cl, ol] = await Promise.all([
      ci ? snap.view.links(ino).then((l) => realLinks(ino, l)) : [],
      oi ? parent.view.links(ino).then((l) => realLinks(ino, l)) : [],
    ]);
    const curOk = !!ci && (cl.length > 0 || ino === ROOT_DIR_INO);
    const oldOk = !!oi && (ol.length > 0 || ino === ROOT_DIR_INO);
    const c: InodeChange = {
      ino,
      cur: curOk ? version(ci!, cl) : undefined,
      old: oldOk ? version(oi!, ol) : undefined,
      replaced: curOk && oldOk && ino !== ROOT_DIR_INO && (ci!.generation !== oi!.generation || (ci!.mode & S_IFMT) !== (oi!.mode & S_IFMT)),
    };
    changes.set(ino, c);
    items.set(ino, { cur: curOk ? ci : undefined, old: oldOk ? oi : undefined });
    return c;
  };
  // independent lookups: let their block reads overlap
  const inos = [...touched.keys()];
  for (let i = 0; i < inos.length; i += LOAD_PARALLEL) await Promise.all(inos.slice(i, i + LOAD_PARALLEL).map(load));
  // the entries of a directory whose number was reused may look unchanged item for item: they move all the same
  const work = [...changes.values()].filter((c) => c.replaced);
  for (let c = work.pop(); c; c = work.pop()) {
    const more: bigint[] = [];
    if (c.old && isDirMode(c.old.mode)) for await (const ch of parent.view.children(c.ino)) more.push(ch.ino);
    if (c.cur && isDirMode(c.cur.mode)) for await (const ch of snap.view.children(c.ino)) more.push(ch.ino);
    for (const ino of more) {
      if (changes.has(ino)) continue;
      const n = await load(ino);
      if (n.replaced) work.push(n);
    }
  }
  for (const [ino, c] of changes) {
    if (!c.cur && !c.old) changes.delete(ino);
  }
  for (const t of touched.values()) t.ranges = normalizeRanges(t.ranges, Number.MAX_SAFE_INTEGER);
  return { changes, touched, items };
}

