/**
 * DIR_ITEM (key (dir DIR_ITEM name_hash)), DIR_INDEX (key (dir DIR_INDEX index))
 * and XATTR_ITEM (key (ino XATTR_ITEM name_hash)) share one entry format.
 * Names whose hashes collide share a DIR_ITEM/XATTR_ITEM; a DIR_INDEX holds one.
 *   0 location key[17] (the inode, or the subvolume's ROOT_ITEM key; zero for xattrs)
 *  17 transid u64 | 25 data_len u16 | 27 name_len u16 | 29 type u8 | 30 name | data   (header = 30)
 */
import { corrupt } from '../../util/errors.js';
import { struct, u8, u16, u64, nested } from '../layout.js';
import { keyCodec } from '../key-codec.js';
import type { Key } from '../key.js';

export interface DirItem {
  location: Key;
  transid: bigint;
  /** FT_* (FT.XATTR for xattr items) */
  type: number;
  name: Buffer;
  /** the xattr value; empty for directory entries */
  data: Buffer;
}

const dirHead = struct<{ location: Key; transid: bigint; data_len: number; name_len: number; type: number }>('dir_item', [
  nested(keyCodec, 'location'), u64('transid'), u16('data_len'), u16('name_len'), u8('type'),
]);
export const DIR_ITEM_HEAD_SIZE = dirHead.size;

export function dirItemSize(nameLen: number, dataLen: number): number {
  return DIR_ITEM_HEAD_SIZE + nameLen + dataLen;
}

export function decodeDirItems(b: Buffer): DirItem[] {
  const out: DirItem[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + DIR_ITEM_HEAD_SIZE > b.length) throw corrupt(`dir_item: truncated entry header at ${off} of ${b.length}`);
    const h = dirHead.decode(b, off);
    const nameAt = off + DIR_ITEM_HEAD_SIZE;
    const end = nameAt + h.name_len + h.data_len;
    if (end > b.length) throw corrupt(`dir_item: name ${h.name_len} + data ${h.data_len} bytes at ${nameAt} overrun item of ${b.length}`);
    out.push({
      location: h.location,
      transid: h.transid,
      type: h.type,
      name: Buffer.from(b.subarray(nameAt, nameAt + h.name_len)),
      data: Buffer.from(b.subarray(nameAt + h.name_len, end)),
    });
    off = end;
  }
  return out;
}

export function encodeDirItems(items: DirItem[]): Buffer {
  const out = Buffer.alloc(items.reduce((n, d) => n + dirItemSize(d.name.length, d.data.length), 0));
  let off = 0;
  for (const d of items) {
    dirHead.encode({ location: d.location, transid: d.transid, data_len: d.data.length, name_len: d.name.length, type: d.type }, out, off);
    d.name.copy(out, off + DIR_ITEM_HEAD_SIZE);
    d.data.copy(out, off + DIR_ITEM_HEAD_SIZE + d.name.length);
    off += dirItemSize(d.name.length, d.data.length);
  }
  return out;
}
