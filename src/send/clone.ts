/**
 * Finding a file range the receiver already has with the same bytes, so a
 * CLONE can replace a WRITE: another file referencing the same on-disk
 * extent, in the parent snapshot, in a clone source (-c), or in the sent
 * snapshot itself where that file is already final on the receiver.
 *
 * The extent tree says who references an extent: EXTENT_DATA_REF (root,
 * inode, file offset minus extent offset) or SHARED_DATA_REF (a leaf,
 * possibly shared by several trees, holding the referencing items). A root
 * named there may be the subvolume a snapshot was taken of rather than the
 * snapshot, so every reference only proposes an (inode, offset) pair; it is
 * then verified in each candidate root by reading that inode's file extent
 * item, which must point at the same extent and cover the range. Snapshots
 * keep inode numbers, which is what makes the proposal useful.
 */
import { KEY } from '../format/constants.js';
import { key, KEY_MAX } from '../format/key.js';
import { decodeExtentItem } from '../format/items/extent-item.js';
import { decodeExtentDataRef } from '../format/items/extent-ref.js';
import { decodeFileExtentItem, isInlineExtent } from '../format/items/file-extent-item.js';
import { FILE_EXTENT } from '../format/constants.js';
import { iterItems, lookupItem, findLastItem, type RootLocation } from '../tree/search.js';
import type { BlockReader } from '../tree/block-reader.js';
import type { TreeView } from './inodes.js';

/** A root the receiver has: the parent, a -c source, or the snapshot being sent. */
export interface CloneRoot {
  view: TreeView;
  /** what the receiver knows it by (received uuid if it has one, else its uuid) */
  uuid: Buffer;
  ctransid: bigint;
  /** the snapshot being sent: only inodes already final on the receiver may be sources */
  self: boolean;
}

export interface CloneRequest {
  diskBytenr: bigint;
  diskNumBytes: bigint;
  compression: number;
  /** offset in the extent's (uncompressed) bytes where the wanted range starts */
  extentOffset: bigint;
  len: number;
  /** the inode being sent (never its own source) */
  ino: bigint;
}

export interface CloneSource {
  uuid: Buffer;
  ctransid: bigint;
  path: Buffer;
  offset: number;
  /** bytes that can be cloned from the start of the request (sector multiple) */
  len: number;
}

/** The kernel gives up on extents with more references than this; so do we. */
const MAX_REFS = 64;

export class CloneFinder {
  lookups = 0;

  constructor(
    private readonly reader: BlockReader,
    private readonly extentRoot: RootLocation,
    /** in order of preference */
    private readonly roots: CloneRoot[],
    private readonly sectorsize: number,
    /** whether inode `ino` of the sent snapshot already has its final contents on the receiver */
    private readonly isFinal: (ino: bigint) => boolean,
  ) {}

  /** Candidate (inode, file offset - extent offset) pairs referencing the extent; undefined if it has just one reference. */
  private async referrers(bytenr: bigint, numBytes: bigint, needShared: boolean): Promise<{ ino: bigint; base: bigint }[] | undefined> {
    this.lookups++;
    const it = await lookupItem(this.reader, this.extentRoot, key(bytenr, KEY.EXTENT_ITEM, numBytes));
    if (!it) return undefined;
    const ei = decodeExtentItem(it.data);
    // one reference is the item being sent, unless it sits in a leaf other roots share
    if (ei.refs < 2n && !needShared) return undefined;
    const out: { ino: bigint; base: bigint }[] = [];
    const seen = new Set<string>();
    const add = (ino: bigint, base: bigint): void => {
      const k = `${ino}:${base}`;
      if (!seen.has(k)) {
        seen.add(k);
        out.push({ ino, base });
      }
    };
    const leaves: bigint[] = [];
    for (const r of ei.inlineRefs) {
      if (r.type === KEY.EXTENT_DATA_REF) add(r.objectid, r.offset);
      else if (r.type === KEY.SHARED_DATA_REF) leaves.push(r.parent);
    }
    for await (const k of iterItems(this.reader, this.extentRoot, key(bytenr, KEY.EXTENT_DATA_REF, 0n), key(bytenr, KEY.SHARED_DATA_REF, KEY_MAX.offset))) {
      if (out.length + leaves.length > MAX_REFS) break;
      if (k.key.type === KEY.EXTENT_DATA_REF) {
        const r = decodeExtentDataRef(k.data);
        add(r.objectid, r.offset);
      } else if (k.key.type === KEY.SHARED_DATA_REF) leaves.push(k.key.offset);
    }
    for (const leaf of leaves.slice(0, MAX_REFS)) {
      const b = await this.reader.read({ bytenr: leaf, level: 0 });
      for (const item of b.items) {
        if (item.key.type !== KEY.EXTENT_DATA) continue;
        const fe = decodeFileExtentItem(item.data);
        if (isInlineExtent(fe) || fe.disk_bytenr !== bytenr) continue;
        add(item.key.objectid, BigInt.asUintN(64, item.key.offset - fe.offset));
      }
    }
    return out.slice(0, MAX_REFS);
  }

  /** A source for a prefix of the request, or undefined. */
  async find(req: CloneRequest): Promise<CloneSource | undefined> {
    const ss = this.sectorsize;
    if (req.len < ss || this.roots.length === 0) return undefined;
    const shared = this.roots.some((r) => !r.self);
    const refs = await this.referrers(req.diskBytenr, req.diskNumBytes, shared);
    if (!refs || refs.length === 0) return undefined;
    for (const root of this.roots) {
      for (const { ino, base } of refs) {
        if (root.self && (ino === req.ino || !this.isFinal(ino))) continue;
        // a reference's offset wraps below zero when an extent was cloned to before its own start
        const at = BigInt.asUintN(64, base + req.extentOffset);
        const it = await findLastItem(this.reader, root.view.root, key(ino, KEY.EXTENT_DATA, 0n), key(ino, KEY.EXTENT_DATA, at));
        if (!it) continue;
        const fe = decodeFileExtentItem(it.data);
        if (isInlineExtent(fe) || fe.type !== FILE_EXTENT.REG || fe.disk_bytenr !== req.diskBytenr || fe.compression !== req.compression) continue;
        if (req.extentOffset < fe.offset || req.extentOffset >= fe.offset + fe.num_bytes) continue;
        const srcOffset = it.key.offset + (req.extentOffset - fe.offset);
        if (srcOffset % BigInt(ss) !== 0n) continue;
        const inode = await root.view.inode(ino);
        if (!inode) continue;
        let len = BigInt(req.len);
        const inItem = fe.offset + fe.num_bytes - req.extentOffset;
        if (inItem < len) len = inItem;
        // a clone may not read past the source's end of file
        if (inode.size - srcOffset < len) len = inode.size - srcOffset;
        len -= len % BigInt(ss);
        if (len < BigInt(ss)) continue;
        const path = await root.view.path(ino);
        if (path === undefined) continue;
        return { uuid: root.uuid, ctransid: root.ctransid, path, offset: Number(srcOffset), len: Number(len) };
      }
    }
    return undefined;
  }
}
