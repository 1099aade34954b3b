/**
 * ROOT_REF (root tree, key (parent_tree ROOT_REF child_tree)) and
 * ROOT_BACKREF (key (child_tree ROOT_BACKREF parent_tree)): where a
 * subvolume is linked into its parent, both directions with the same body:
 *   0 dirid u64 (directory inode in the parent) | 8 sequence u64 (its DIR_INDEX)
 *  16 name_len u16 | 18 name[name_len]
 */
import { corrupt } from '../../util/errors.js';
import { struct, u16, u64 } from '../layout.js';

export interface RootRef {
  dirid: bigint;
  sequence: bigint;
  name: Buffer;
}

const refHead = struct<{ dirid: bigint; sequence: bigint; name_len: number }>('root_ref', [
  u64('dirid'), u64('sequence'), u16('name_len'),
]);
export const ROOT_REF_HEAD_SIZE = refHead.size;

export function decodeRootRef(b: Buffer): RootRef {
  const h = refHead.decode(b, 0);
  if (ROOT_REF_HEAD_SIZE + h.name_len > b.length) {
    throw corrupt(`root_ref: name of ${h.name_len} bytes overruns item of ${b.length}`);
  }
  return { dirid: h.dirid, sequence: h.sequence, name: Buffer.from(b.subarray(ROOT_REF_HEAD_SIZE, ROOT_REF_HEAD_SIZE + h.name_len)) };
}

export function encodeRootRef(r: RootRef): Buffer {
  const out = Buffer.alloc(ROOT_REF_HEAD_SIZE + r.name.length);
  refHead.encode({ dirid: r.dirid, sequence: r.sequence, name_len: r.name.length }, out, 0);
  r.name.copy(out, ROOT_REF_HEAD_SIZE);
  return out;
}
