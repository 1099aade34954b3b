/**
 * The path walk shared by the read view (Filesystem, over committed trees) and
 * the write view (TxView, over a running transaction's trees): `..` and `.`,
 * symlinks in the middle and, when asked, at the end, at most 40 of them as
 * the kernel allows, absolute targets starting again at the view's base. What
 * differs between the views is only how an entry is found and followed and
 * how a target is read, so those come in as a WalkSource.
 */
import { BtrfsError } from '../util/errors.js';
import { S_IFMT, S_IFDIR, S_IFLNK, NAME_LEN } from '../format/constants.js';
import type { InodeItem } from '../format/items/inode-item.js';

/** What the walk needs to know of a resolved inode. */
export interface WalkNode {
  item: InodeItem;
  /** the kernel's empty directory standing in for an unlinked subvolume: it has no entries */
  placeholder?: boolean;
}

export interface WalkSource<N extends WalkNode> {
  /** The entry `name` of directory `dir`, followed to its inode (or subvolume root); undefined when there is none. */
  child(dir: N, name: Buffer): Promise<N | undefined>;
  /** The target of the symlink `link`. */
  target(link: N): Promise<Buffer>;
}

/** The kernel's MAXSYMLINKS. */
export const MAX_SYMLINKS = 40;

function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

/**
 * Walks `path` from `base` (the view's root directory). Returns every
 * directory passed on the way, `base` first and the resolved inode last:
 * after symlinks and `..` are taken, that is the inode's real ancestry (what
 * rename checks for loops).
 */
export async function walkPath<N extends WalkNode>(path: string, base: N, src: WalkSource<N>, follow: boolean): Promise<N[]> {
  const pending = components(path);
  const stack: N[] = [base];
  let links = 0;
  while (pending.length) {
    const comp = pending.shift()!;
    if (comp === '..') {
      if (stack.length > 1) stack.pop();
      continue;
    }
    const cur = stack[stack.length - 1]!;
    if ((cur.item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError('ENOTDIR', 'not a directory', { path, syscall: 'lstat' });
    const name = Buffer.from(comp, 'utf8');
    if (name.length > NAME_LEN) throw new BtrfsError('ENAMETOOLONG', 'name too long', { path });
    const next = cur.placeholder ? undefined : await src.child(cur, name);
    if (!next) throw new BtrfsError('ENOENT', 'no such file or directory', { path, syscall: 'lstat' });
    if ((next.item.mode & S_IFMT) === S_IFLNK && (pending.length > 0 || follow)) {
      if (++links > MAX_SYMLINKS) throw new BtrfsError('ELOOP', 'too many levels of symbolic links', { path });
      const target = (await src.target(next)).toString('utf8');
      // An absolute target starts again at the view's base, the root directory a mount of it would have.
      if (target.startsWith('/')) stack.length = 1;
      pending.unshift(...components(target));
      continue;
    }
    stack.push(next);
  }
  return stack;
}
