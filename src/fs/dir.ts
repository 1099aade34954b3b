/**
 * Directory lookups and listings. A name is found through DIR_ITEM (keyed by
 * the name's hash, entries with colliding hashes share the item); a listing
 * walks DIR_INDEX (keyed by a per-directory sequence), which is the order
 * readdir returns on a kernel mount.
 */
import { BtrfsError } from '../util/errors.js';
import { nameHash } from '../util/checksum.js';
import { KEY, FT } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeDirItems, type DirItem } from '../format/items/dir-item.js';
import { iterItems, lookupItem, type RootLocation } from '../tree/search.js';
import type { FsInfo } from '../tree/fs-info.js';

export interface DirEntry {
  name: Buffer;
  /** FT_* type of the entry */
  type: number;
  /** the inode (location.type INODE_ITEM) or subvolume (location.type ROOT_ITEM) the entry points at */
  location: DirItem['location'];
  index: bigint;
}

export async function lookupName(info: FsInfo, root: RootLocation, dirIno: bigint, name: Buffer): Promise<DirItem | undefined> {
  const it = await lookupItem(info.reader, root, key(dirIno, KEY.DIR_ITEM, nameHash(name)));
  if (!it) return undefined;
  let entries: DirItem[];
  try {
    entries = decodeDirItems(it.data);
  } catch (e) {
    throw e instanceof BtrfsError ? e.withWhere({ tree: root.objectid, block: it.block.bytenr, key: it.key }) : e;
  }
  return entries.find((d) => d.name.equals(name));
}

export async function* listDir(info: FsInfo, root: RootLocation, dirIno: bigint): AsyncGenerator<DirEntry> {
  for await (const it of iterItems(info.reader, root, key(dirIno, KEY.DIR_INDEX, 0n), key(dirIno, KEY.DIR_INDEX, 0xffff_ffff_ffff_ffffn))) {
    let entries: DirItem[];
    try {
      entries = decodeDirItems(it.data);
    } catch (e) {
      throw e instanceof BtrfsError ? e.withWhere({ tree: root.objectid, block: it.block.bytenr, key: it.key }) : e;
    }
    for (const d of entries) {
      if (d.type === FT.XATTR) continue;
      yield { name: d.name, type: d.type, location: d.location, index: it.key.offset };
    }
  }
}

export const FT_NAMES: Record<number, string> = {
  [FT.UNKNOWN]: 'unknown', [FT.REG_FILE]: 'file', [FT.DIR]: 'dir', [FT.CHRDEV]: 'chardev',
  [FT.BLKDEV]: 'blockdev', [FT.FIFO]: 'fifo', [FT.SOCK]: 'socket', [FT.SYMLINK]: 'symlink',
};
