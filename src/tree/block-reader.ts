/**
 * Reads tree blocks by logical bytenr, verified, through every mirror.
 * A block whose first copy fails verification (bad checksum, wrong bytenr,
 * stale generation) is read again from the next copy, as the kernel does
 * for DUP/RAID1; only when every copy fails is the first error reported.
 */
import { BtrfsError } from '../util/errors.js';
import type { BlockDevice } from '../device/block-device.js';
import type { ChunkMap } from '../volumes/chunk-map.js';
import { checkTreeBlock, type BlockExpectation, type CheckContext } from '../verify/tree-checker.js';
import type { TreeBlock } from '../format/tree-block.js';

export interface BlockReaderStats { reads: number; hits: number; mirrorRetries: number }

export class BlockReader {
  private cache = new Map<bigint, TreeBlock>();
  /**
   * Blocks a running transaction has written but not committed, by bytenr:
   * they shadow the device so readers see the transaction's state. Set and
   * cleared by the transaction layer.
   */
  overlay: Map<bigint, Buffer> | undefined;
  private overlayDecoded = new Map<bigint, TreeBlock>();
  readonly stats: BlockReaderStats = { reads: 0, hits: 0, mirrorRetries: 0 };

  constructor(
    private readonly device: BlockDevice,
    private readonly devid: bigint,
    readonly chunks: ChunkMap,
    readonly ctx: CheckContext,
    private readonly cacheBlocks = 8192,
  ) {}

  /** Reads [logical, +len) from the first copy (data reads: no per-block checksum here). */
  async readLogical(logical: bigint, len: number, mirror = 0): Promise<Buffer> {
    const copies = this.chunks.map(logical, len);
    const c = copies[Math.min(mirror, copies.length - 1)]!;
    return this.readPhysical(c.devid, c.physical, len, logical);
  }

  /** How many copies the chunk holding `logical` has. */
  numCopies(logical: bigint): number {
    return this.chunks.map(logical, 1).length;
  }

  private async readPhysical(devid: bigint, physical: bigint, len: number, logical: bigint): Promise<Buffer> {
    if (devid !== this.devid) {
      throw new BtrfsError('ENOTSUP', `logical ${logical} lives on device ${devid}; only single-device filesystems are supported`, { block: logical });
    }
    const end = physical + BigInt(len);
    if (end > BigInt(this.device.size)) {
      throw new BtrfsError('EIO', `logical ${logical} maps to physical ${physical}+${len}, past the end of the device (${this.device.size} bytes)`, { block: logical });
    }
    return this.device.read(Number(physical), len);
  }

  /** A verified tree block. Cached blocks are reused only if they meet the same expectations. */
  async read(exp: BlockExpectation): Promise<TreeBlock> {
    const dirty = this.overlay?.get(exp.bytenr);
    if (dirty) {
      let b = this.overlayDecoded.get(exp.bytenr);
      if (!b || b.buf !== dirty) {
        b = checkTreeBlock(dirty, this.ctx, exp);
        this.overlayDecoded.set(exp.bytenr, b);
      } else if ((exp.generation !== undefined && b.generation !== exp.generation) || (exp.level !== undefined && b.level !== exp.level)) {
        b = checkTreeBlock(dirty, this.ctx, exp);
      }
      return b;
    }
    const hit = this.cache.get(exp.bytenr);
    if (hit && (exp.generation === undefined || hit.generation === exp.generation) && (exp.level === undefined || hit.level === exp.level)) {
      this.stats.hits++;
      this.cache.delete(exp.bytenr);
      this.cache.set(exp.bytenr, hit);
      return hit;
    }
    const copies = this.chunks.map(exp.bytenr, this.ctx.nodesize);
    let firstErr: unknown;
    for (let i = 0; i < copies.length; i++) {
      const c = copies[i]!;
      try {
        this.stats.reads++;
        const buf = await this.readPhysical(c.devid, c.physical, this.ctx.nodesize, exp.bytenr);
        const block = checkTreeBlock(buf, this.ctx, exp);
        if (this.cache.size >= this.cacheBlocks) this.cache.delete(this.cache.keys().next().value!);
        this.cache.set(exp.bytenr, block);
        return block;
      } catch (e) {
        if (!(e instanceof BtrfsError)) throw e;
        firstErr ??= e;
        if (i + 1 < copies.length) this.stats.mirrorRetries++;
      }
    }
    throw firstErr;
  }

  /** Forget cached blocks (after the image changed underneath, e.g. a commit). */
  invalidate(bytenr?: bigint): void {
    if (bytenr === undefined) {
      this.cache.clear();
      this.overlayDecoded.clear();
    } else {
      this.cache.delete(bytenr);
      this.overlayDecoded.delete(bytenr);
    }
  }
}
