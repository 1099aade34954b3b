/**
 * What send needs to know about one inode of one tree: its item, its names
 * (every INODE_REF and INODE_EXTREF: hard links), its xattrs, its path from
 * the tree's root directory. All reads go through one `TreeView`, which
 * remembers directory paths, since send asks for the same parents again
 * and again.
 */
import { BtrfsError } from '../util/errors.js';
import { nameHash } from '../util/checksum.js';
import { KEY, S_IFMT, S_IFDIR, ROOT_DIR_INO } from '../format/constants.js';
import { key, KEY_MAX } from '../format/key.js';
import { decodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { decodeInodeRefs } from '../format/items/inode-ref.js';
import { decodeInodeExtrefs } from '../format/items/inode-extref.js';
import { decodeDirItems } from '../format/items/dir-item.js';
import { iterItems, lookupItem, type RootLocation } from '../tree/search.js';
import type { BlockReader } from '../tree/block-reader.js';

/** One name of an inode: entry `name` in directory `dir`. */
export interface Link { dir: bigint; name: Buffer }

export interface Xattr { name: Buffer; value: Buffer }

export const isDirMode = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR;

function wrap(e: unknown, tree: bigint, ino: bigint): unknown {
  return e instanceof BtrfsError ? e.withWhere({ tree, key: key(ino, KEY.INODE_ITEM, 0n) }) : e;
}

/** Read access to one fs tree, with the lookups send makes. */
export class TreeView {
  private dirPaths = new Map<bigint, Buffer>();

  constructor(readonly reader: BlockReader, readonly root: RootLocation) {}

  get id(): bigint {
    return this.root.objectid;
  }

  async inode(ino: bigint): Promise<InodeItem | undefined> {
    const it = await lookupItem(this.reader, this.root, key(ino, KEY.INODE_ITEM, 0n));
    if (!it) return undefined;
    try {
      return decodeInodeItem(it.data, 0);
    } catch (e) {
      throw wrap(e, this.id, ino);
    }
  }

  /** Every name of the inode, INODE_REFs first (by parent), then INODE_EXTREFs. */
  async links(ino: bigint): Promise<Link[]> {
    const out: Link[] = [];
    try {
      for await (const it of iterItems(this.reader, this.root, key(ino, KEY.INODE_REF, 0n), key(ino, KEY.INODE_EXTREF, KEY_MAX.offset))) {
        if (it.key.type === KEY.INODE_REF) {
          for (const r of decodeInodeRefs(it.data)) out.push({ dir: it.key.offset, name: r.name });
        } else {
          for (const r of decodeInodeExtrefs(it.data)) out.push({ dir: r.parent, name: r.name });
        }
      }
    } catch (e) {
      throw wrap(e, this.id, ino);
    }
    return out;
  }

  /** The inode a directory entry names, or undefined (no such name, or a subvolume's entry, which send leaves out). */
  async lookup(dir: bigint, name: Buffer): Promise<bigint | undefined> {
    const it = await lookupItem(this.reader, this.root, key(dir, KEY.DIR_ITEM, nameHash(name)));
    if (!it) return undefined;
    const d = decodeDirItems(it.data).find((x) => x.name.equals(name));
    if (!d || d.location.type !== KEY.INODE_ITEM) return undefined;
    return d.location.objectid;
  }

  /** The entries of a directory that name inodes of this tree (subvolume entries left out). */
  async *children(dir: bigint): AsyncGenerator<{ name: Buffer; ino: bigint }> {
    for await (const it of iterItems(this.reader, this.root, key(dir, KEY.DIR_INDEX, 0n), key(dir, KEY.DIR_INDEX, KEY_MAX.offset))) {
      for (const d of decodeDirItems(it.data)) {
        if (d.location.type === KEY.INODE_ITEM) yield { name: d.name, ino: d.location.objectid };
      }
    }
  }

  async xattrs(ino: bigint): Promise<Xattr[]> {
    const out: Xattr[] = [];
    for await (const it of iterItems(this.reader, this.root, key(ino, KEY.XATTR_ITEM, 0n), key(ino, KEY.XATTR_ITEM, KEY_MAX.offset))) {
      for (const d of decodeDirItems(it.data)) out.push({ name: d.name, value: d.data });
    }
    return out;
  }

  /** One xattr's value, or undefined. */
  async xattr(ino: bigint, name: Buffer): Promise<Buffer | undefined> {
    const it = await lookupItem(this.reader, this.root, key(ino, KEY.XATTR_ITEM, nameHash(name)));
    if (!it) return undefined;
    return decodeDirItems(it.data).find((d) => d.name.equals(name))?.data;
  }

  /**
   * The path of an inode from the tree's root directory ('' for the root
   * itself), through its first name at every level; undefined when the
   * inode has no name (gone, or orphaned awaiting deletion).
   */
  async path(ino: bigint): Promise<Buffer | undefined> {
    if (ino === ROOT_DIR_INO) return Buffer.alloc(0);
    const known = this.dirPaths.get(ino);
    if (known) return known;
    const parts: Buffer[] = [];
    let cur = ino;
    const seen = new Set<bigint>();
    let base: Buffer = Buffer.alloc(0);
    while (cur !== ROOT_DIR_INO) {
      const cached = this.dirPaths.get(cur);
      if (cached) {
        base = cached;
        break;
      }
      if (seen.has(cur)) throw new BtrfsError('EUCLEAN', `inode ${ino} has a loop in its parent chain`, { tree: this.id });
      seen.add(cur);
      const l = (await this.links(cur))[0];
      if (!l) return undefined;
      parts.push(l.name);
      cur = l.dir;
    }
    let p = base;
    for (let i = parts.length - 1; i >= 0; i--) p = joinPath(p, parts[i]!);
    // only directories: their one name is stable, a file's first name may not be the one asked about next
    if (ino !== ROOT_DIR_INO) {
      const item = await this.inode(ino);
      if (item && isDirMode(item.mode)) this.dirPaths.set(ino, p);
    }
    return p;
  }
}

export function joinPath(dir: Buffer, name: Buffer): Buffer {
  if (dir.length === 0) return name;
  return Buffer.concat([dir, Buffer.from('/'), name]);
}
