/**
 * ORPHAN_ITEM, key (ORPHAN ORPHAN_ITEM ino) in a fs tree for an unlinked
 * inode still to be freed, or in the root tree (key offset = tree id) for a
 * deleted subvolume still to be dropped. The key says it all: no body.
 */
import { corrupt } from '../../util/errors.js';

export function decodeOrphanItem(b: Buffer): Record<string, never> {
  if (b.length !== 0) throw corrupt(`orphan item with ${b.length} bytes of body`);
  return {};
}

export function encodeOrphanItem(): Buffer { return Buffer.alloc(0); }
