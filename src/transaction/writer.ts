/**
 * An image open for writing: the committed state (FsInfo), the space in it,
 * and at most one running transaction. `transaction()` starts one when
 * needed; `commit()` makes it durable; `abort()` forgets it and reloads the
 * image as its last commit left it.
 *
 * Commit order, for crash safety: (1) the transaction's bookkeeping is
 * settled into its trees; (2) every new tree block is written, to space the
 * last commit does not use; (3) flush; (4) the superblock and its mirrors;
 * (5) flush. Until (4) lands the old superblock points at the old, untouched
 * trees; after it, at the new ones.
 */
import { BtrfsError } from '../util/errors.js';
import { initChecksums, CSUM_TYPE } from '../util/checksum.js';
import type { BlockDevice } from '../device/block-device.js';
import { KEY, OBJ, BLOCK_GROUP, FEATURE_COMPAT_RO, FEATURE_INCOMPAT } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeBlockGroupItem } from '../format/items/block-group-item.js';
import { decodeDevExtent } from '../format/items/dev-extent.js';
import { FsInfo } from '../tree/fs-info.js';
import { iterItems, type RootLocation } from '../tree/search.js';
import { BlockGroup, SpaceManager, type SpaceKind } from '../extent/block-groups.js';
import { loadFreeSpace } from '../extent/free-space-tree.js';
import { Transaction, type TransactionHost } from './transaction.js';
import { settle, writeBlocks, buildSuperblock, writeSuperblocks, type CommitTarget } from './commit.js';

export interface CommitStats { generation: bigint; rounds: number; blocks: number }

export interface WriterOptions {
  /** clock for inode and root times (tests pin it) */
  now?: () => { sec: bigint; nsec: number };
}

/** Now, with nanoseconds: Date gives milliseconds, hrtime the rest. */
export function nowNs(): { sec: bigint; nsec: number } {
  const ms = BigInt(Date.now());
  const sub = Number(process.hrtime.bigint() % 1_000_000n);
  return { sec: ms / 1000n, nsec: Number(ms % 1000n) * 1_000_000 + sub };
}

export class FsWriter implements TransactionHost {
  private txn: Transaction | undefined;
  private target!: CommitTarget;
  space!: SpaceManager;
  chunkTreeUuid!: Buffer;
  private closed = false;
  /** the free space tree of the last commit: groups not loaded yet are read from it */
  private committedFst!: RootLocation;
  /** an I/O error during commit: nothing more may be written */
  private failed: unknown;

  private constructor(readonly device: BlockDevice, readonly info: FsInfo, private readonly opts: WriterOptions) {}

  static async open(device: BlockDevice, opts: WriterOptions = {}): Promise<FsWriter> {
    if (device.readOnly) throw new BtrfsError('EROFS', 'image is open read-only', { path: device.name });
    const info = await FsInfo.open(device);
    const w = new FsWriter(device, info, opts);
    await w.load();
    return w;
  }

  now(): { sec: bigint; nsec: number } {
    return (this.opts.now ?? nowNs)();
  }

  private async load(): Promise<void> {
    const info = this.info;
    const sb = info.sb;
    const where = { path: this.device.name };
    if (sb.csum_type === CSUM_TYPE.XXHASH) await initChecksums();
    if (!(sb.compat_ro_flags & FEATURE_COMPAT_RO.FREE_SPACE_TREE) || !(sb.compat_ro_flags & FEATURE_COMPAT_RO.FREE_SPACE_TREE_VALID)) {
      throw new BtrfsError('ENOTSUP', 'writing needs the free space tree (space_cache=v2); mount once with -o space_cache=v2 to convert', where);
    }
    if (!(sb.incompat_flags & FEATURE_INCOMPAT.SKINNY_METADATA)) throw new BtrfsError('ENOTSUP', 'writing needs skinny metadata extent items', where);
    if (sb.incompat_flags & (FEATURE_INCOMPAT.MIXED_GROUPS | FEATURE_INCOMPAT.ZONED | FEATURE_INCOMPAT.EXTENT_TREE_V2 | FEATURE_INCOMPAT.RAID_STRIPE_TREE | FEATURE_INCOMPAT.SIMPLE_QUOTA)) {
      throw new BtrfsError('ENOTSUP', `writing is not supported with incompat features 0x${sb.incompat_flags.toString(16)}`, where);
    }
    if (info.logRoot) {
      throw new BtrfsError('ENOTSUP', 'the image has an unreplayed log tree (fsync after its last commit); mount it once with the kernel to replay it', where);
    }
    const chunkRootBlock = await info.reader.read({ bytenr: info.chunkRoot.bytenr, level: info.chunkRoot.level, generation: info.chunkRoot.generation });
    this.chunkTreeUuid = Buffer.from(chunkRootBlock.header.chunk_tree_uuid);
    const profiles: Record<SpaceKind, bigint> = { data: 0n, metadata: BLOCK_GROUP.DUP, system: BLOCK_GROUP.DUP };
    const seen = new Set<SpaceKind>();
    for (const c of info.chunks.all()) {
      const kind: SpaceKind = c.type & BLOCK_GROUP.DATA ? 'data' : c.type & BLOCK_GROUP.SYSTEM ? 'system' : 'metadata';
      if (c.type & BLOCK_GROUP.DATA && c.type & BLOCK_GROUP.METADATA) throw new BtrfsError('ENOTSUP', 'mixed block groups are not supported for writing', where);
      const prof = c.type & (BLOCK_GROUP.DUP | BLOCK_GROUP.RAID0 | BLOCK_GROUP.RAID1 | BLOCK_GROUP.RAID10 | BLOCK_GROUP.RAID5 | BLOCK_GROUP.RAID6 | BLOCK_GROUP.RAID1C3 | BLOCK_GROUP.RAID1C4);
      if (prof & ~BLOCK_GROUP.DUP) throw new BtrfsError('ENOTSUP', `chunk profile 0x${prof.toString(16)} is not supported for writing`, where);
      if (!seen.has(kind)) { profiles[kind] = prof; seen.add(kind); }
    }
    this.committedFst = await info.rootOf(OBJ.FREE_SPACE_TREE);
    const space = new SpaceManager({
      sectorsize: info.sectorsize, nodesize: info.nodesize, devid: sb.dev_item.devid, devUuid: Buffer.from(sb.dev_item.uuid),
      deviceBytes: sb.dev_item.total_bytes < BigInt(this.device.size) ? sb.dev_item.total_bytes : BigInt(this.device.size),
      profiles,
      // committed state: groups are loaded lazily, and a group's entries are
      // never changed before it is loaded, so the committed tree is right
      loadFree: async (g) => {
        const got = await loadFreeSpace(this.info.reader, this.committedFst, g.start, g.length, info.sectorsize);
        return got && { free: got.free, flags: got.info.flags };
      },
    }, info.chunks);
    const writtenUsed = new Map<bigint, bigint>();
    const bgRoot = sb.compat_ro_flags & FEATURE_COMPAT_RO.BLOCK_GROUP_TREE ? await info.rootOf(OBJ.BLOCK_GROUP_TREE) : await info.rootOf(OBJ.EXTENT_TREE);
    for await (const it of iterItems(info.reader, bgRoot, key(0n, KEY.BLOCK_GROUP_ITEM, 0n))) {
      if (it.key.type !== KEY.BLOCK_GROUP_ITEM) continue;
      const bg = decodeBlockGroupItem(it.data);
      space.addGroup(new BlockGroup(it.key.objectid, it.key.offset, bg.flags, bg.used));
      writtenUsed.set(it.key.objectid, bg.used);
    }
    const devRoot = await info.rootOf(OBJ.DEV_TREE);
    const devid = sb.dev_item.devid;
    for await (const it of iterItems(info.reader, devRoot, key(devid, KEY.DEV_EXTENT, 0n), key(devid, KEY.DEV_EXTENT, 0xffff_ffff_ffff_ffffn))) {
      const de = decodeDevExtent(it.data);
      space.devUsed.add(it.key.offset, it.key.offset + de.length);
    }
    this.space = space;
    this.target = { space, writtenUsed, chunksWritten: new Set() };
  }

  /** The running transaction, started if there is none. */
  transaction(): Transaction {
    this.usable();
    this.txn ??= new Transaction(this);
    return this.txn;
  }

  /** True when a transaction is running (changes not yet committed). */
  get dirty(): boolean { return this.txn !== undefined; }

  /**
   * Makes the running transaction's changes readable through `info` (its
   * reader and tree root) without committing: root items are written and
   * changed blocks encoded into the transaction's overlay.
   */
  async syncView(): Promise<void> {
    const t = this.txn;
    if (!t) return;
    // read-side code reads data through `info`, not the transaction
    await t.drainData();
    await t.syncRootItems();
    t.tree.flush();
    this.info.treeRoot = { ...t.rootTree };
  }

  /** Commits the running transaction (nothing to do without one). */
  async commit(): Promise<CommitStats | undefined> {
    this.usable();
    const t = this.txn;
    if (!t) return undefined;
    if (t.poisoned) throw new BtrfsError('EIO', 'the transaction failed earlier; abort it (nothing of it was written)', { cause: t.poisoned });
    let rounds: number;
    let sb;
    try {
      // file data before the superblock that makes it reachable (a failed write poisons)
      await t.drainData();
      rounds = await settle(t, this.target);
      t.tree.flush();
      if (t.pending.size === 0) {
        // only reads happened: there is nothing to commit, and a new
        // superblock generation over an unchanged root tree would not verify
        this.txn = undefined;
        this.info.reader.overlay = undefined;
        this.info.reader.ctx.superGeneration = this.info.sb.generation;
        return undefined;
      }
      if (t.rootTree.generation !== t.generation) {
        // the superblock's generation is its root tree's: make the root tree part of this commit
        await t.touchRootTree();
        rounds += await settle(t, this.target);
        t.tree.flush();
      }
      sb = await buildSuperblock(t, this.space);
    } catch (e) {
      t.poisoned = e;
      throw e;
    }
    let blocks: number;
    try {
      blocks = await writeBlocks(t);
      await this.device.flush();
      await writeSuperblocks(t, sb);
      await this.device.flush();
    } catch (e) {
      // the device may hold part of this commit: whatever it holds is the old
      // or the new state, but this handle can no longer tell which
      this.failed = e;
      throw e;
    }
    this.txn = undefined;
    this.space.committed();
    this.target.chunksWritten.clear();
    this.info.committed(sb);
    this.committedFst = await this.info.rootOf(OBJ.FREE_SPACE_TREE);
    return { generation: t.generation, rounds, blocks };
  }

  /** Forgets the running transaction; the image stays at its last commit. */
  async abort(): Promise<void> {
    if (this.closed) return;
    // no write of the dropped transaction may land after the reload
    await this.txn?.drainData().catch(() => undefined);
    this.txn = undefined;
    this.info.reader.overlay = undefined;
    await this.info.reload();
    await this.load();
  }

  private usable(): void {
    if (this.closed) throw new BtrfsError('EBADF', 'image is closed', { path: this.device.name });
    if (this.failed) throw new BtrfsError('EIO', 'an earlier commit failed to write; reopen the image', { path: this.device.name, cause: this.failed });
  }

  /** Closes without committing: a running transaction is discarded. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.txn?.drainData().catch(() => undefined);
    this.txn = undefined;
    await this.device.close();
  }
}
