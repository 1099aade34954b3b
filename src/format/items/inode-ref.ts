/**
 * INODE_REF (fs trees, key (ino INODE_REF parent_dir_ino)): one or more
 * back references from an inode to names in the same parent directory
 * (hard links in one directory share the item), packed back to back:
 *   0 index u64 (the DIR_INDEX offset of the name) | 8 name_len u16 | 10 name[name_len]
 */
import { corrupt } from '../../util/errors.js';
import { struct, u16, u64 } from '../layout.js';

export interface InodeRef {
  index: bigint;
  name: Buffer;
}

const refHead = struct<{ index: bigint; name_len: number }>('inode_ref', [u64('index'), u16('name_len')]);
export const INODE_REF_HEAD_SIZE = refHead.size;

export function decodeInodeRefs(b: Buffer): InodeRef[] {
  const out: InodeRef[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + INODE_REF_HEAD_SIZE > b.length) throw corrupt(`inode_ref: truncated entry header at ${off} of ${b.length}`);
    const h = refHead.decode(b, off);
    const start = off + INODE_REF_HEAD_SIZE;
    if (start + h.name_len > b.length) throw corrupt(`inode_ref: name of ${h.name_len} bytes at ${start} overruns item of ${b.length}`);
    out.push({ index: h.index, name: Buffer.from(b.subarray(start, start + h.name_len)) });
    off = start + h.name_len;
  }
  return out;
}

export function inodeRefSize(nameLen: number): number {
  return INODE_REF_HEAD_SIZE + nameLen;
}

export function encodeInodeRefs(refs: InodeRef[]): Buffer {
  const out = Buffer.alloc(refs.reduce((n, r) => n + inodeRefSize(r.name.length), 0));
  let off = 0;
  for (const r of refs) {
    refHead.encode({ index: r.index, name_len: r.name.length }, out, off);
    r.name.copy(out, off + INODE_REF_HEAD_SIZE);
    off += inodeRefSize(r.name.length);
  }
  return out;
}
