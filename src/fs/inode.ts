/**
 * Inodes are addressed by (subvolume tree id, inode number). Every lookup
 * goes through here so that a missing or malformed inode item becomes one
 * typed error naming both.
 */
import { BtrfsError } from '../util/errors.js';
import { KEY, S_IFDIR } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { lookupItem, type RootLocation } from '../tree/search.js';
import type { FsInfo } from '../tree/fs-info.js';

export interface InodeLoc { subvol: bigint; ino: bigint }

/** The placeholder inode number the kernel shows for a subvolume entry whose subvolume is gone or not linked here. */
export const EMPTY_SUBVOL_DIR_INO = 2n;

/**
 * The inode item of that placeholder, as the kernel's dummy directory: mode
 * 0755, owner and atime from the directory holding the entry, no birth time.
 * Its mtime/ctime are the time the kernel first looked it up, which an image
 * cannot tell, so the parent's are used.
 */
export function placeholderInodeItem(parent: InodeItem): InodeItem {
  return {
    ...parent, mode: S_IFDIR | 0o755, nlink: 1, size: 0n, nbytes: 0n, rdev: 0n, flags: 0n,
    otime: { sec: 0n, nsec: 0 },
  };
}

export async function readInodeItem(info: FsInfo, root: RootLocation, ino: bigint, path?: string): Promise<InodeItem> {
  const it = await lookupItem(info.reader, root, key(ino, KEY.INODE_ITEM, 0n));
  if (!it) throw new BtrfsError('ENOENT', `inode ${ino} has no inode item in subvolume ${root.objectid}`, { path, tree: root.objectid });
  try {
    return decodeInodeItem(it.data, 0);
  } catch (e) {
    throw e instanceof BtrfsError ? e.withWhere({ path, tree: root.objectid, block: it.block.bytenr, key: it.key }) : e;
  }
}
