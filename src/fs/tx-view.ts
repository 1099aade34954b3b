/**
 * Path resolution inside a running transaction, for the write operations:
 * the same walk as Filesystem.resolve (path-walk.ts; subvolumes crossed
 * where their parent links them, the kernel's empty placeholder where it
 * does not), but reading the
 * transaction's trees directly, so a write needs no encoded snapshot of
 * every changed block first (that made each operation cost as much as all
 * the changes before it).
 */
import { BtrfsError } from '../util/errors.js';
import { KEY, OBJ, S_IFMT, S_IFLNK, ROOT_DIR_INO } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeFileExtentItem, isInlineExtent } from '../format/items/file-extent-item.js';
import type { InodeItem } from '../format/items/inode-item.js';
import type { Transaction } from '../transaction/transaction.js';
import { findEntry, readInode } from './namespace.js';
import { EMPTY_SUBVOL_DIR_INO, placeholderInodeItem } from './inode.js';
import { walkPath } from './path-walk.js';

export interface TxResolved {
  path: string;
  subvol: bigint;
  ino: bigint;
  item: InodeItem;
  placeholder?: boolean;
}

export class TxView {
  constructor(private readonly t: Transaction, private readonly base: bigint = OBJ.FS_TREE) {}

  async resolve(path: string, follow = false): Promise<TxResolved> {
    const t = this.t;
    if (typeof path !== 'string') throw new BtrfsError('EINVAL', 'path must be a string');
    const { item: rootItem } = await t.rootItem(this.base);
    const rootIno = rootItem.root_dirid || ROOT_DIR_INO;
    const base: TxResolved = { path, subvol: this.base, ino: rootIno, item: await readInode(t, this.base, rootIno) };
    const stack = await walkPath(path, base, { child: (dir, name) => this.child(dir, name, path), target: (link) => this.target(link) }, follow);
    return { ...stack[stack.length - 1]!, path };
  }

  /**
   * Follows an entry of `dir`: into a subvolume when the parent links it (a
   * ROOT_REF), to the kernel's empty placeholder when it does not, else to
   * the inode.
   */
  private async child(dir: TxResolved, name: Buffer, path: string): Promise<TxResolved | undefined> {
    const t = this.t;
    const d = await findEntry(t, dir.subvol, dir.ino, name);
    if (!d) return undefined;
    if (d.location.type !== KEY.ROOT_ITEM) {
      return { path, subvol: dir.subvol, ino: d.location.objectid, item: await readInode(t, dir.subvol, d.location.objectid) };
    }
    const child = d.location.objectid;
    const linked = await t.lookup(OBJ.ROOT_TREE, key(dir.subvol, KEY.ROOT_REF, child));
    const ri = linked ? await t.rootItem(child).catch(() => undefined) : undefined;
    if (ri && ri.item.refs > 0) {
      const ino = ri.item.root_dirid || ROOT_DIR_INO;
      return { path, subvol: child, ino, item: await readInode(t, child, ino) };
    }
    return { path, subvol: dir.subvol, ino: EMPTY_SUBVOL_DIR_INO, item: placeholderInodeItem(dir.item), placeholder: true };
  }

  /** A symlink's target: the kernel keeps it in one inline extent, never compressed. */
  private async target(r: TxResolved): Promise<Buffer> {
    const raw = await this.t.lookup(r.subvol, key(r.ino, KEY.EXTENT_DATA, 0n));
    const fe = raw && decodeFileExtentItem(raw);
    if (!fe || !isInlineExtent(fe) || fe.compression !== 0) {
      throw new BtrfsError('EUCLEAN', `symlink inode ${r.ino} has no plain inline target`, { path: r.path, tree: r.subvol });
    }
    return fe.data;
  }

  async readlink(path: string): Promise<string> {
    const r = await this.resolve(path, false);
    if ((r.item.mode & S_IFMT) !== S_IFLNK) throw new BtrfsError('EINVAL', 'not a symbolic link', { path, syscall: 'readlink' });
    return (await this.target(r)).toString('utf8');
  }

  async exists(path: string): Promise<boolean> {
    try {
      await this.resolve(path, false);
      return true;
    } catch (e) {
      if (e instanceof BtrfsError && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return false;
      throw e;
    }
  }
}
