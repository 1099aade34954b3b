/**
 * Opening a filesystem (the kernel's open_ctree): superblock, then the
 * chunk map from sys_chunk_array, then the chunk tree, then the root tree.
 * FsInfo is the read path every higher layer shares: which block reader,
 * which roots, which geometry.
 */
import { BtrfsError, corrupt } from '../util/errors.js';
import { csumSize, initChecksums, CSUM_TYPE } from '../util/checksum.js';
import type { BlockDevice } from '../device/block-device.js';
import {
  SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS, KEY, OBJ, FEATURE_INCOMPAT, SUPPORTED_INCOMPAT,
} from '../format/constants.js';
import { decodeSuperblock, hasMagic, superblockCsumOk, validateSuperblock, type Superblock } from '../format/superblock.js';
import { key, KEY_MAX } from '../format/key.js';
import { decodeChunkItem } from '../format/items/chunk-item.js';
import { devItem, type DevItem } from '../format/items/dev-item.js';
import { decodeRootItem, type RootItem } from '../format/items/root-item.js';
import { ChunkMap, parseSysChunkArray } from '../volumes/chunk-map.js';
import { BlockReader } from './block-reader.js';
import { iterItems, findLastItem, type RootLocation } from './search.js';

export interface OpenOptions {
  /** which superblock copy to trust: 0 (primary, default), 1 or 2 */
  superMirror?: number;
}

/** Where a tree's root block is, as its root item says. */
export function rootLocation(objectid: bigint, item: RootItem): RootLocation {
  return { objectid, bytenr: item.bytenr, level: item.level, generation: item.generation };
}

export class FsInfo {
  readonly nodesize: number;
  readonly sectorsize: number;
  readonly csumType: number;
  readonly csumSize: number;
  /** the chunk tree's root: the committed one, or a writer's newer one */
  chunkRoot: RootLocation;
  /** the root tree's root: the committed one, or a writer's view of its running transaction */
  treeRoot: RootLocation;
  readonly devItems: DevItem[] = [];

  private constructor(
    readonly device: BlockDevice,
    /** the superblock of the last commit (a writer replaces it when it commits) */
    public sb: Superblock,
    /** the raw bytes of the superblock that was used */
    public sbRaw: Buffer,
    public chunks: ChunkMap,
    public reader: BlockReader,
  ) {
    this.nodesize = sb.nodesize;
    this.sectorsize = sb.sectorsize;
    this.csumType = sb.csum_type;
    this.csumSize = csumSize(sb.csum_type);
    this.chunkRoot = { objectid: OBJ.CHUNK_TREE, bytenr: sb.chunk_root, level: sb.chunk_root_level, generation: sb.chunk_root_generation };
    this.treeRoot = { objectid: OBJ.ROOT_TREE, bytenr: sb.root, level: sb.root_level, generation: sb.generation };
  }

  /**
   * A writer committed `sb`: every root and cached block moves to it. The
   * chunk map already holds any chunk the commit added.
   */
  committed(sb: Superblock): void {
    this.sb = sb;
    this.chunkRoot = { objectid: OBJ.CHUNK_TREE, bytenr: sb.chunk_root, level: sb.chunk_root_level, generation: sb.chunk_root_generation };
    this.treeRoot = { objectid: OBJ.ROOT_TREE, bytenr: sb.root, level: sb.root_level, generation: sb.generation };
    this.reader.overlay = undefined;
    this.reader.ctx.superGeneration = sb.generation;
    this.reader.invalidate();
  }

  /**
   * Re-reads everything from the device's last commit into this object (a
   * writer's abort: in-memory chunks and blocks of the dropped transaction
   * go away, and whoever holds this FsInfo sees the committed image).
   */
  async reload(): Promise<void> {
    const fresh = await FsInfo.open(this.device);
    this.sb = fresh.sb;
    this.sbRaw = fresh.sbRaw;
    this.chunks = fresh.chunks;
    this.reader = fresh.reader;
    this.chunkRoot = fresh.chunkRoot;
    this.treeRoot = fresh.treeRoot;
    this.devItems.splice(0, this.devItems.length, ...fresh.devItems);
  }

  /** Reads and validates superblock copy `mirror` (0 = primary). */
  static async readSuperblock(device: BlockDevice, mirror = 0): Promise<{ sb: Superblock; raw: Buffer }> {
    const off = SUPER_MIRROR_OFFSETS[mirror];
    if (off === undefined) throw new BtrfsError('EINVAL', `no superblock mirror ${mirror}`);
    const where = `superblock copy ${mirror} at ${off}`;
    if (off + SUPER_INFO_SIZE > device.size) {
      throw new BtrfsError(mirror === 0 ? 'EINVAL' : 'ENOENT', `${where}: device is only ${device.size} bytes`, { path: device.name });
    }
    const raw = await device.read(off, SUPER_INFO_SIZE);
    if (!hasMagic(raw)) throw new BtrfsError('EINVAL', `not a btrfs filesystem (no magic in ${where})`, { path: device.name });
    const csumType = raw.readUInt16LE(196);
    if (csumType > 3) throw corrupt(`${where}: unknown checksum type ${csumType}`);
    if (csumType === CSUM_TYPE.XXHASH) await initChecksums();
    if (!superblockCsumOk(raw, csumType)) throw new BtrfsError('EIO', `${where}: checksum mismatch`, { path: device.name });
    const sb = decodeSuperblock(raw);
    validateSuperblock(sb, where);
    if (sb.bytenr !== BigInt(off)) throw corrupt(`${where}: records bytenr ${sb.bytenr}`);
    return { sb, raw };
  }

  /**
   * Opens the filesystem on `device`. A read-only device that is one member
   * of a multi-device filesystem opens degraded, as btrfs check and
   * `mount -o degraded,ro` do (see missingDevices); a writable one is refused.
   */
  static async open(device: BlockDevice, opts: OpenOptions = {}): Promise<FsInfo> {
    const { sb, raw } = await FsInfo.readSuperblock(device, opts.superMirror ?? 0);
    const unsupported = sb.incompat_flags & ~SUPPORTED_INCOMPAT;
    if (unsupported !== 0n) {
      throw new BtrfsError('ENOTSUP', `filesystem uses unsupported incompat features 0x${unsupported.toString(16)}`, { path: device.name });
    }
    // One member of a multi-device filesystem can be read degraded (what the
    // others hold is unreachable), but never written: a commit would leave
    // the other members behind with superblocks and trees of an older generation.
    if (sb.num_devices !== 1n && !device.readOnly) {
      throw new BtrfsError('ENOTSUP', `filesystem has ${sb.num_devices} devices; writing supports only single-device filesystems (open the device read-only to read it degraded)`, { path: device.name });
    }
    const fsid = sb.incompat_flags & FEATURE_INCOMPAT.METADATA_UUID ? sb.metadata_uuid : sb.fsid;
    const chunks = new ChunkMap();
    for (const { logical, chunk } of parseSysChunkArray(sb)) chunks.add(logical, chunk, sb.sectorsize);
    const reader = new BlockReader(device, sb.dev_item.devid, chunks, {
      nodesize: sb.nodesize, sectorsize: sb.sectorsize, csumType: sb.csum_type, fsid, superGeneration: sb.generation,
    });
    const info = new FsInfo(device, sb, raw, chunks, reader);
    await info.loadChunkTree();
    return info;
  }

  /**
   * The devices of this filesystem that were not opened, by devid: every
   * device the chunk tree names (as a DEV_ITEM or a chunk stripe) but the
   * one whose superblock was read. Empty for a single-device filesystem; a
   * degraded open otherwise, whose blocks and data are readable only where
   * a copy sits on the device that was opened.
   */
  get missingDevices(): bigint[] {
    const own = this.sb.dev_item.devid;
    const ids = new Set<bigint>();
    for (const d of this.devItems) if (d.devid !== own) ids.add(d.devid);
    for (const c of this.chunks.all()) for (const s of c.stripes) if (s.devid !== own) ids.add(s.devid);
    return [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  private async loadChunkTree(): Promise<void> {
    for await (const it of iterItems(this.reader, this.chunkRoot)) {
      if (it.key.type === KEY.CHUNK_ITEM) {
        try {
          this.chunks.add(it.key.offset, decodeChunkItem(it.data, 0, it.data.length), this.sectorsize);
        } catch (e) {
          throw e instanceof BtrfsError ? e.withWhere({ tree: OBJ.CHUNK_TREE, block: it.block.bytenr, slot: it.slot, key: it.key }) : e;
        }
      } else if (it.key.type === KEY.DEV_ITEM) {
        this.devItems.push(devItem.decode(it.data, 0));
      }
    }
  }

  /**
   * The ROOT_ITEM of tree `objectid` (the newest one: snapshots' root items
   * carry the creating transid as key offset), or undefined.
   */
  async findRootItem(objectid: bigint): Promise<{ offset: bigint; item: RootItem } | undefined> {
    const it = await findLastItem(this.reader, this.treeRoot, key(objectid, KEY.ROOT_ITEM, 0n), key(objectid, KEY.ROOT_ITEM, KEY_MAX.offset));
    if (!it) return undefined;
    try {
      return { offset: it.key.offset, item: decodeRootItem(it.data) };
    } catch (e) {
      throw e instanceof BtrfsError ? e.withWhere({ tree: OBJ.ROOT_TREE, block: it.block.bytenr, slot: it.slot, key: it.key }) : e;
    }
  }

  /**
   * The log root tree, when the image was last written by fsync after its
   * last commit (a crash or power cut before the next commit). The kernel
   * replays it on mount; tsbtrfs does not replay, so it shows the last
   * committed state and callers should say so.
   */
  get logRoot(): RootLocation | undefined {
    if (this.sb.log_root === 0n) return undefined;
    return { objectid: OBJ.TREE_LOG, bytenr: this.sb.log_root, level: this.sb.log_root_level, generation: this.sb.generation + 1n };
  }

  /** Tree `objectid`'s root location and root item, or undefined if there is no such tree. */
  async findRoot(objectid: bigint): Promise<{ loc: RootLocation; item: RootItem } | undefined> {
    const r = await this.findRootItem(objectid);
    return r && { loc: rootLocation(objectid, r.item), item: r.item };
  }

  /** Where tree `objectid`'s root block is; ENOENT if there is no such tree. */
  async rootOf(objectid: bigint): Promise<RootLocation> {
    if (objectid === OBJ.ROOT_TREE) return this.treeRoot;
    if (objectid === OBJ.CHUNK_TREE) return this.chunkRoot;
    const r = await this.findRoot(objectid);
    if (!r) throw new BtrfsError('ENOENT', `no root item for tree ${objectid}`, { tree: objectid });
    return r.loc;
  }

  /** Data bytes at a logical address (first copy). */
  readData(logical: bigint, len: number): Promise<Buffer> {
    return this.reader.readLogical(logical, len);
  }
}
