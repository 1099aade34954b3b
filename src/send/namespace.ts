/**
 * Names: turning the receiver's directory tree, which starts as the parent
 * snapshot's (or as an empty subvolume for a full send), into the sent
 * snapshot's, with commands that are valid one after the other.
 *
 * The receiver only knows paths, so every command names things by where
 * they are at that moment. The planner keeps a model of the receiver's
 * tree: for each inode involved its current names, for each directory the
 * entries that differ from the parent snapshot (everything else is read
 * from the parent's tree when asked). Paths are computed from the model
 * just before each command.
 *
 * An inode is one "node" per identity: an inode number whose generation or
 * type differs between the two snapshots is two nodes, the old one removed
 * and the new one created (its number was reused).
 *
 * Order, in three phases:
 *  1. unlink names files lose, where that cannot hurt (a file keeps at
 *     least one name until it gets its new ones; a deleted file loses all);
 *  2. repeatedly do every creation, rename and new link that is possible
 *     now: its target directory exists, the name there is free, and a
 *     directory is not being moved into itself. When nothing is possible,
 *     break one blockage: a name held by someone who must leave is freed by
 *     moving its holder aside to an orphan name `o<ino>-<gen>-<n>` in the
 *     top directory (or unlinking one of its spare names, or removing it if
 *     it is an empty deleted directory); a directory that would move under
 *     its own descendant is unblocked by moving aside the descendant on the
 *     way that has to move anyway (the snapshot is a tree, so one exists).
 *     Swapped names, rename cycles and a directory moved under its former
 *     child all resolve this way, with one extra rename per cycle.
 *  3. remove deleted directories once they are empty, deepest first.
 *
 * Every directory whose entries a command changed is remembered, so that
 * its times can be set again after all names are in place.
 *
 * A receiver's new inode inherits from the directory it is made in: its
 * default ACL (an access ACL, and for a directory the default ACL too) and
 * the btrfs.compression property. The sender's inode may not have them
 * (it was made elsewhere and moved, or they were removed later), so the
 * planner works out what each creation inherits on the receiver — from the
 * parent snapshot's xattrs, or from what earlier creations inherited — and
 * the contents stage removes what the sent inode does not have.
 */
import { BtrfsError } from '../util/errors.js';
import { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, ROOT_DIR_INO } from '../format/constants.js';
import { SEND_CMD } from '../format/send-stream.js';
import { joinPath, type Link, type TreeView } from './inodes.js';
import type { StreamWriter } from './stream-writer.js';
import { aclExtended, inheritedCompression, usableAcl } from '../fs/inherit.js';

/** The part of an inode item the planner needs. */
export interface InodeVersion {
  gen: bigint;
  mode: number;
  rdev: bigint;
  links: Link[];
}

/** One inode that differs between the snapshots (or every inode, for a full send). */
export interface InodeChange {
  ino: bigint;
  /** in the parent snapshot (undefined: new) */
  old?: InodeVersion;
  /** in the sent snapshot (undefined: deleted) */
  cur?: InodeVersion;
  /** both exist but are different inodes (the number was reused) */
  replaced: boolean;
}

type NodeId = string;

interface NodeLink { dir: NodeId; name: Buffer }

interface Node {
  id: NodeId;
  ino: bigint;
  gen: bigint;
  mode: number;
  rdev: bigint;
  isDir: boolean;
  /** in both snapshots, only the old one, only the new one */
  side: 'both' | 'old' | 'new';
  /** names on the receiver now */
  cur: NodeLink[];
  /** names it must end with */
  target: NodeLink[];
  /** a 'new' node that was created (the root always exists) */
  created: boolean;
}

type Task = { kind: 'create' | 'move' | 'link'; node: Node; to: NodeLink };

/** What a directory passes on to inodes made in it. */
interface Inheritable { compression?: Buffer; defaultAcl?: Buffer }

const XATTR_COMPRESSION = Buffer.from('btrfs.compression');
const XATTR_ACL_ACCESS = Buffer.from('system.posix_acl_access');
const XATTR_ACL_DEFAULT = Buffer.from('system.posix_acl_default');

const ROOT: NodeId = String(ROOT_DIR_INO);

const sameLink = (a: NodeLink, b: NodeLink): boolean => a.dir === b.dir && a.name.equals(b.name);
const has = (list: NodeLink[], l: NodeLink): boolean => list.some((x) => sameLink(x, l));
const entryKey = (dir: NodeId, name: Buffer): string => `${dir}\u0000${name.toString('latin1')}`;

export class NamespacePlanner {
  private readonly nodes = new Map<NodeId, Node>();
  /** entries that differ from the parent snapshot: null = removed */
  private readonly entries = new Map<string, NodeId | null>();
  /** per directory, the entries set to a node (for emptiness checks) */
  private readonly filled = new Map<NodeId, Set<string>>();
  /** directories whose entries changed on the receiver */
  readonly touched = new Set<NodeId>();
  /** per directory node, what it passes on to new inodes on the receiver */
  private readonly inheritable = new Map<NodeId, Inheritable>();
  /** per new inode of the sent snapshot, the xattrs the receiver gave it when it was made */
  readonly inherited = new Map<bigint, Buffer[]>();
  private guard = 0;
  /** set when run() has finished: names are final */
  private done = false;
  private readonly finalDirs = new Map<NodeId, Buffer>();

  constructor(
    private readonly out: StreamWriter,
    private readonly old: TreeView | undefined,
    private readonly changes: Map<bigint, InodeChange>,
    /** the target of a new symlink */
    private readonly symlinkTarget: (ino: bigint) => Promise<Buffer>,
  ) {
    for (const c of changes.values()) {
      if (c.old) this.addNode(c, 'old');
      if (c.cur && !(c.old && !c.replaced)) this.addNode(c, 'new');
    }
  }

  idOld(ino: bigint): NodeId {
    return this.changes.get(ino)?.replaced ? `${ino}-` : String(ino);
  }

  idNew(ino: bigint): NodeId {
    return this.changes.get(ino)?.replaced ? `${ino}+` : String(ino);
  }

  private addNode(c: InodeChange, which: 'old' | 'new'): void {
    const both = !!c.old && !!c.cur && !c.replaced;
    const v = which === 'old' ? c.old! : c.cur!;
    const id = which === 'old' ? this.idOld(c.ino) : this.idNew(c.ino);
    const side = both ? 'both' : which;
    const n: Node = {
      id, ino: c.ino, gen: v.gen, mode: v.mode, rdev: v.rdev, isDir: (v.mode & S_IFMT) === S_IFDIR, side,
      cur: side === 'new' ? [] : c.old!.links.map((l) => ({ dir: this.idOld(l.dir), name: l.name })),
      target: side === 'old' ? [] : c.cur!.links.map((l) => ({ dir: this.idNew(l.dir), name: l.name })),
      created: c.ino === ROOT_DIR_INO,
    };
    this.nodes.set(id, n);
  }

  /** A node; inodes that did not change come from the parent snapshot, where they are as in the sent one. */
  private async node(id: NodeId): Promise<Node> {
    const known = this.nodes.get(id);
    if (known) return known;
    const ino = BigInt(id.replace(/[+-]$/, ''));
    const item = this.old && (await this.old.inode(ino));
    if (!this.old || !item || id !== String(ino)) {
      throw new BtrfsError('EUCLEAN', `send: inode ${ino} is referenced but not in the parent snapshot`, { tree: this.old?.id });
    }
    const links = (await this.old.links(ino)).map((l) => ({ dir: this.idOld(l.dir), name: l.name }));
    const n: Node = {
      id, ino, gen: item.generation, mode: item.mode, rdev: item.rdev, isDir: (item.mode & S_IFMT) === S_IFDIR,
      side: 'both', cur: links, target: links.map((l) => ({ ...l })), created: false,
    };
    this.nodes.set(id, n);
    return n;
  }

  private exists(n: Node): boolean {
    return n.side === 'new' ? n.created : n.cur.length > 0 || n.ino === ROOT_DIR_INO;
  }

  /** The node holding `name` in `dir` on the receiver now, or null. */
  private async occupant(dir: NodeId, name: Buffer): Promise<NodeId | null> {
    const k = entryKey(dir, name);
    if (this.entries.has(k)) return this.entries.get(k)!;
    const d = await this.node(dir);
    if (d.side === 'new' || !this.old) return null;
    const ino = await this.old.lookup(d.ino, name);
    return ino === undefined ? null : this.idOld(ino);
  }

  private setEntry(dir: NodeId, name: Buffer, v: NodeId | null): void {
    const k = entryKey(dir, name);
    this.entries.set(k, v);
    let s = this.filled.get(dir);
    if (v !== null) {
      if (!s) this.filled.set(dir, (s = new Set()));
      s.add(k);
    } else s?.delete(k);
    this.touched.add(dir);
  }

  private async isEmpty(dir: Node): Promise<boolean> {
    if ((this.filled.get(dir.id)?.size ?? 0) > 0) return false;
    if (dir.side === 'new' || !this.old) return true;
    for await (const c of this.old.children(dir.ino)) {
      const k = entryKey(dir.id, c.name);
      const v = this.entries.has(k) ? this.entries.get(k)! : this.idOld(c.ino);
      if (v !== null) return false;
    }
    return true;
  }

  /** Where a node is on the receiver now ('' for the subvolume's top directory). */
  async pathOf(id: NodeId): Promise<Buffer> {
    const parts: Buffer[] = [];
    let cur = id;
    for (let depth = 0; cur !== ROOT; depth++) {
      if (depth > 4096) throw new BtrfsError('ELOOP', `send: inode ${id} has no path to the top directory`);
      const n = await this.node(cur);
      const l = n.cur[0];
      if (!l) throw new BtrfsError('EUCLEAN', `send: inode ${n.ino} has no name on the receiver`);
      parts.push(l.name);
      cur = l.dir;
    }
    let p: Buffer = Buffer.alloc(0);
    for (let i = parts.length - 1; i >= 0; i--) p = joinPath(p, parts[i]!);
    return p;
  }

  private async linkPath(l: NodeLink): Promise<Buffer> {
    return joinPath(await this.pathOf(l.dir), l.name);
  }

  /** The path, after planning, of inode `ino` of the sent snapshot. */
  async finalPath(ino: bigint): Promise<Buffer> {
    if (!this.done) return this.pathOf(this.idNew(ino));
    // names no longer change: directories' paths are worth remembering
    const n = await this.node(this.idNew(ino));
    if (n.ino === ROOT_DIR_INO) return Buffer.alloc(0);
    const l = n.cur[0];
    if (!l) throw new BtrfsError('EUCLEAN', `send: inode ${n.ino} has no name on the receiver`);
    let dir = this.finalDirs.get(l.dir);
    if (!dir) {
      dir = await this.pathOf(l.dir);
      this.finalDirs.set(l.dir, dir);
    }
    return joinPath(dir, l.name);
  }

  /** The inode numbers of the directories whose entries changed and that exist in the sent snapshot. */
  async touchedDirs(): Promise<bigint[]> {
    const out: bigint[] = [];
    for (const id of this.touched) {
      const n = await this.node(id);
      if (n.side !== 'old') out.push(n.ino);
    }
    return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  // ---------------------------------------------------------------- commands, with the model kept in step

  private async unlinkName(n: Node, l: NodeLink): Promise<void> {
    await this.out.unlink(await this.linkPath(l));
    n.cur = n.cur.filter((x) => !sameLink(x, l));
    this.setEntry(l.dir, l.name, null);
  }

  private async renameName(n: Node, from: NodeLink, to: NodeLink): Promise<void> {
    await this.out.rename(await this.linkPath(from), await this.linkPath(to));
    n.cur = n.cur.map((x) => (sameLink(x, from) ? to : x));
    this.setEntry(from.dir, from.name, null);
    this.setEntry(to.dir, to.name, n.id);
  }

  private async inheritableOf(dir: Node): Promise<Inheritable> {
    const known = this.inheritable.get(dir.id);
    if (known) return known;
    const out: Inheritable = {};
    if (dir.side !== 'new' && this.old) {
      const c = inheritedCompression(await this.old.xattr(dir.ino, XATTR_COMPRESSION));
      if (c) out.compression = c;
      const acl = usableAcl(await this.old.xattr(dir.ino, XATTR_ACL_DEFAULT));
      if (acl) out.defaultAcl = acl;
    }
    this.inheritable.set(dir.id, out);
    return out;
  }

  /** Records what `n`, made in `dir`, gets from it on the receiver. */
  private async inherit(n: Node, dir: NodeId): Promise<void> {
    const from = await this.inheritableOf(await this.node(dir));
    const type = n.mode & S_IFMT;
    const names: Buffer[] = [];
    const mine: Inheritable = {};
    if (from.compression && (type === S_IFREG || type === S_IFDIR)) {
      names.push(XATTR_COMPRESSION);
      mine.compression = from.compression;
    }
    if (from.defaultAcl && type !== S_IFLNK) {
      if (aclExtended(from.defaultAcl)) names.push(XATTR_ACL_ACCESS);
      if (type === S_IFDIR) {
        names.push(XATTR_ACL_DEFAULT);
        mine.defaultAcl = from.defaultAcl;
      }
    }
    if (names.length) this.inherited.set(n.ino, names);
    if (type === S_IFDIR) this.inheritable.set(n.id, mine);
  }

  private async create(n: Node, to: NodeLink): Promise<void> {
    await this.inherit(n, to.dir);
    const path = await this.linkPath(to);
    switch (n.mode & S_IFMT) {
      case S_IFREG: await this.out.make(SEND_CMD.MKFILE, path, n.ino); break;
      case S_IFDIR: await this.out.make(SEND_CMD.MKDIR, path, n.ino); break;
      case S_IFIFO: await this.out.make(SEND_CMD.MKFIFO, path, n.ino); break;
      case S_IFSOCK: await this.out.make(SEND_CMD.MKSOCK, path, n.ino); break;
      case S_IFCHR:
      case S_IFBLK: await this.out.mknod(path, n.ino, n.mode, n.rdev); break;
      case S_IFLNK: await this.out.symlink(path, n.ino, await this.symlinkTarget(n.ino)); break;
      default: throw new BtrfsError('EUCLEAN', `send: inode ${n.ino} has unknown file type 0${(n.mode & S_IFMT).toString(8)}`);
    }
    n.created = true;
    n.cur = [to];
    this.setEntry(to.dir, to.name, n.id);
  }

  private async orphanName(n: Node): Promise<NodeLink> {
    for (let i = 0; ; i++) {
      const name = Buffer.from(`o${n.ino}-${n.gen}-${i}`);
      if ((await this.occupant(ROOT, name)) === null) return { dir: ROOT, name };
    }
  }

  /** Frees `at` (held by `id`): drops a spare name, removes an empty deleted directory, or moves the holder aside. */
  private async evict(id: NodeId, at: NodeLink): Promise<void> {
    const n = await this.node(id);
    if (!n.isDir && n.cur.length > 1) return this.unlinkName(n, at);
    if (n.isDir && n.side === 'old' && (await this.isEmpty(n))) {
      await this.out.rmdir(await this.linkPath(at));
      n.cur = [];
      this.setEntry(at.dir, at.name, null);
      return;
    }
    await this.renameName(n, at, await this.orphanName(n));
  }

  // ---------------------------------------------------------------- the plan

  /** Emits every name command; afterwards the receiver's names are the sent snapshot's. */
  async run(): Promise<void> {
    const tasks: Task[] = [];
    const ordered = [...this.nodes.values()].sort((a, b) => (a.ino < b.ino ? -1 : a.ino > b.ino ? 1 : a.side === 'old' ? -1 : 1));
    for (const n of ordered) {
      this.out.check();
      if (n.ino === ROOT_DIR_INO) continue;
      if (n.side === 'old') {
        if (!n.isDir) for (const l of [...n.cur]) await this.unlinkName(n, l);
        continue;
      }
      if (n.side === 'new') {
        if (n.target.length === 0) continue;
        tasks.push({ kind: 'create', node: n, to: n.target[0]! });
        for (const t of n.target.slice(1)) tasks.push({ kind: 'link', node: n, to: t });
        continue;
      }
      if (n.target.length === 0) {
        // no name in the sent snapshot (an unlinked inode kept alive by an open file): it is gone for the receiver
        if (!n.isDir) for (const l of [...n.cur]) await this.unlinkName(n, l);
        continue;
      }
      const keep = n.cur.filter((l) => has(n.target, l));
      const removed = n.cur.filter((l) => !has(n.target, l));
      const added = n.target.filter((l) => !has(n.cur, l));
      if (added.length === 0 && removed.length === 0) continue;
      if (n.isDir) {
        tasks.push({ kind: 'move', node: n, to: n.target[0]! });
        continue;
      }
      // a file keeps one name to be renamed when all of its names change
      const spare = keep.length > 0 ? removed : removed.slice(1);
      for (const l of spare) await this.unlinkName(n, l);
      const links = keep.length > 0 ? added : added.slice(1);
      if (keep.length === 0) tasks.push({ kind: 'move', node: n, to: added[0]! });
      for (const t of links) tasks.push({ kind: 'link', node: n, to: t });
    }

    let pending = tasks;
    while (pending.length > 0) {
      const next: Task[] = [];
      let progress = false;
      for (const t of pending) {
        this.out.check();
        if (await this.ready(t)) {
          await this.perform(t);
          progress = true;
        } else next.push(t);
      }
      pending = next;
      if (!progress && pending.length > 0 && !(await this.unblock(pending))) {
        const t = pending[0]!;
        throw new BtrfsError('EUCLEAN', `send: cannot order the name changes (inode ${t.node.ino} ${t.kind} to ${t.to.name.toString('utf8')} is stuck)`);
      }
    }

    // names a file still has but must not keep (it was moved aside while still holding them)
    for (const n of this.nodes.values()) {
      if (n.isDir || n.side === 'old') continue;
      for (const l of n.cur.filter((x) => !has(n.target, x))) await this.unlinkName(n, l);
    }
    await this.removeDeletedDirs();
    this.done = true;
  }

  private async ready(t: Task): Promise<boolean> {
    const dir = await this.node(t.to.dir);
    if (!this.exists(dir)) return false;
    if ((await this.occupant(t.to.dir, t.to.name)) !== null) return false;
    if (t.kind === 'link' && !this.exists(t.node)) return false;
    if (t.kind === 'move' && t.node.isDir && (await this.isUnder(t.to.dir, t.node.id))) return false;
    return true;
  }

  private async perform(t: Task): Promise<void> {
    const n = t.node;
    if (t.kind === 'create') return this.create(n, t.to);
    if (t.kind === 'move') {
      const from = n.isDir ? n.cur[0] : n.cur.find((l) => !has(n.target, l));
      if (from) return this.renameName(n, from, t.to);
      // a file whose old name was dropped to free it for someone else, after it got a new one: link instead
      if (n.isDir || n.cur.length === 0) throw new BtrfsError('EUCLEAN', `send: inode ${n.ino} has no name left to move`);
    }
    const existing = await this.linkPath(n.cur[0]!);
    await this.out.link(await this.linkPath(t.to), existing);
    n.cur.push(t.to);
    this.setEntry(t.to.dir, t.to.name, n.id);
  }

  /** Whether `id` is `anc` or below it on the receiver now. */
  private async isUnder(id: NodeId, anc: NodeId): Promise<boolean> {
    let cur = id;
    for (let depth = 0; depth < 4096; depth++) {
      if (cur === anc) return true;
      if (cur === ROOT) return false;
      const n = await this.node(cur);
      const l = n.cur[0];
      if (!l) return false;
      cur = l.dir;
    }
    throw new BtrfsError('ELOOP', `send: directory ${id} has no path to the top directory`);
  }

  /** Breaks one blockage among tasks none of which can run; false if none could be found. */
  private async unblock(pending: Task[]): Promise<boolean> {
    if (++this.guard > 1_000_000) return false;
    for (const t of pending) {
      const dir = await this.node(t.to.dir);
      if (!this.exists(dir)) continue;
      const occ = await this.occupant(t.to.dir, t.to.name);
      if (occ !== null && occ !== t.node.id) {
        await this.evict(occ, t.to);
        return true;
      }
    }
    for (const t of pending) {
      if (t.kind !== 'move' || !t.node.isDir) continue;
      if (!(await this.isUnder(t.to.dir, t.node.id))) continue;
      // the chain from the target directory up to the moving one: someone on it must move anyway
      const chain: Node[] = [];
      for (let cur = t.to.dir; cur !== t.node.id;) {
        const n = await this.node(cur);
        chain.push(n);
        cur = n.cur[0]!.dir;
      }
      const mover = chain.find((n) => n.side !== 'old' && !has(n.target, n.cur[0]!)) ?? chain.find((n) => n.side === 'old');
      if (!mover) return false;
      await this.renameName(mover, mover.cur[0]!, await this.orphanName(mover));
      return true;
    }
    // a creation waiting on a directory that cannot be placed yet: make it aside and move it later
    for (const t of pending) {
      if (t.kind !== 'create') continue;
      await this.create(t.node, await this.orphanName(t.node));
      t.kind = 'move';
      return true;
    }
    return false;
  }

  private async removeDeletedDirs(): Promise<void> {
    let left = [...this.nodes.values()].filter((n) => n.side === 'old' && n.isDir && n.cur.length > 0);
    while (left.length > 0) {
      const next: Node[] = [];
      for (const n of left) {
        this.out.check();
        if (await this.isEmpty(n)) {
          const l = n.cur[0]!;
          await this.out.rmdir(await this.linkPath(l));
          n.cur = [];
          this.setEntry(l.dir, l.name, null);
        } else next.push(n);
      }
      if (next.length === left.length) {
        throw new BtrfsError('EUCLEAN', `send: deleted directory inode ${next[0]!.ino} is not empty on the receiver after all moves`);
      }
      left = next;
    }
  }
}
