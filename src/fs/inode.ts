/**
 * Inodes are addressed by (subvolume tree id, inode number). Every lookup
 * goes through here so that a missing or malformed inode item becomes one
 * typed error naming both.
 */
import { BtrfsError } from '../util/errors.js';
import { KEY } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { lookupItem, type RootLocation } from '../tree/search.js';
import type { FsInfo } from '../tree/fs-info.js';

export interface InodeLoc { subvol: bigint; ino: bigint }

/** The placeholder inode number the kernel shows for a subvolume entry whose subvolume is gone or not linked here. */
export const EMPTY_SUBVOL_DIR_INO = 2n;

export async function readInodeItem(info: FsInfo, root: RootLocation, ino: bigint, path?: string): Promise<InodeItem> {
  const it = await lookupItem(info.reader, root, key(ino, KEY.INODE_ITEM, 0n));
  if (!it) throw new BtrfsError('ENOENT', `inode ${ino} has no inode item in subvolume ${root.objectid}`, { path, tree: root.objectid });
  try {
    return decodeInodeItem(it.data, 0);
  } catch (e) {
    throw e instanceof BtrfsError ? e.withWhere({ path, tree: root.objectid, block: it.block.bytenr, key: it.key }) : e;
  }
}
