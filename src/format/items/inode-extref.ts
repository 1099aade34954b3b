/**
 * INODE_EXTREF (fs trees, key (ino INODE_EXTREF hash(parent, name))): the
 * extended back reference used once an INODE_REF item would grow past what
 * a leaf holds. Entries whose (parent, name) hash collides share an item:
 *   0 parent u64 | 8 index u64 | 16 name_len u16 | 18 name[name_len]
 */
import { corrupt } from '../../util/errors.js';
import { struct, u16, u64 } from '../layout.js';

export interface InodeExtref {
  parent: bigint;
  index: bigint;
  name: Buffer;
}

const extrefHead = struct<{ parent: bigint; index: bigint; name_len: number }>('inode_extref', [
  u64('parent'), u64('index'), u16('name_len'),
]);
export const INODE_EXTREF_HEAD_SIZE = extrefHead.size;

export function decodeInodeExtrefs(b: Buffer): InodeExtref[] {
  const out: InodeExtref[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + INODE_EXTREF_HEAD_SIZE > b.length) throw corrupt(`inode_extref: truncated entry header at ${off} of ${b.length}`);
    const h = extrefHead.decode(b, off);
    const start = off + INODE_EXTREF_HEAD_SIZE;
    if (start + h.name_len > b.length) throw corrupt(`inode_extref: name of ${h.name_len} bytes at ${start} overruns item of ${b.length}`);
    out.push({ parent: h.parent, index: h.index, name: Buffer.from(b.subarray(start, start + h.name_len)) });
    off = start + h.name_len;
  }
  return out;
}

export function inodeExtrefSize(nameLen: number): number {
  return INODE_EXTREF_HEAD_SIZE + nameLen;
}

export function encodeInodeExtrefs(refs: InodeExtref[]): Buffer {
  const out = Buffer.alloc(refs.reduce((n, r) => n + inodeExtrefSize(r.name.length), 0));
  let off = 0;
  for (const r of refs) {
    extrefHead.encode({ parent: r.parent, index: r.index, name_len: r.name.length }, out, off);
    r.name.copy(out, off + INODE_EXTREF_HEAD_SIZE);
    off += inodeExtrefSize(r.name.length);
  }
  return out;
}
