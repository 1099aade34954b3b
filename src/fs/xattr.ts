/** Extended attributes: XATTR_ITEMs keyed (ino, XATTR_ITEM, hash(name)), value in the item's data. */
import { BtrfsError } from '../util/errors.js';
import { nameHash } from '../util/checksum.js';
import { KEY } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeDirItems, type DirItem } from '../format/items/dir-item.js';
import { iterItems, lookupItem, type RootLocation } from '../tree/search.js';
import type { FsInfo } from '../tree/fs-info.js';

function decodeAt(it: { data: Buffer; block: { bytenr: bigint }; key: DirItem['location'] }, root: RootLocation): DirItem[] {
  try {
    return decodeDirItems(it.data);
  } catch (e) {
    throw e instanceof BtrfsError ? e.withWhere({ tree: root.objectid, block: it.block.bytenr, key: it.key }) : e;
  }
}

/** All xattrs of an inode, in on-disk (hash) order. */
export async function listXattrs(info: FsInfo, root: RootLocation, ino: bigint): Promise<{ name: string; value: Buffer }[]> {
  const out: { name: string; value: Buffer }[] = [];
  for await (const it of iterItems(info.reader, root, key(ino, KEY.XATTR_ITEM, 0n), key(ino, KEY.XATTR_ITEM, 0xffff_ffff_ffff_ffffn))) {
    for (const d of decodeAt(it, root)) out.push({ name: d.name.toString('utf8'), value: d.data });
  }
  return out;
}

export async function getXattr(info: FsInfo, root: RootLocation, ino: bigint, name: string): Promise<Buffer | undefined> {
  const nb = Buffer.from(name, 'utf8');
  const it = await lookupItem(info.reader, root, key(ino, KEY.XATTR_ITEM, nameHash(nb)));
  if (!it) return undefined;
  return decodeAt(it, root).find((d) => d.name.equals(nb))?.data;
}
