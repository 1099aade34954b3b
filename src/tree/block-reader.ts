/**
 * Reads tree blocks by logical bytenr, verified, through every mirror.
 * A block whose first copy fails verification (bad checksum, wrong bytenr,
 * stale generation) is read again from the next copy, as the kernel does
 * for DUP/RAID1; only when every copy fails is the first error reported.
 * The reader holds one device: on a member of a multi-device filesystem
 * (opened degraded) only the copies on that device are read.
 */
import { BtrfsError } from '../util/errors.js';
import type { BlockDevice } from '../device/block-device.js';
import type { ChunkMap, PhysicalCopy } from '../volumes/chunk-map.js';
import { checkFirstKey, checkTreeBlock, type BlockExpectation, type CheckContext } from '../verify/tree-checker.js';
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
    /** the one device this reader has; copies on any other are unreachable (a degraded open) */
    private readonly devid: bigint,
    readonly chunks: ChunkMap,
    readonly ctx: CheckContext,
    /** verified blocks kept (least recently used dropped first); a reader that will read every block twice may raise it */
    public cacheBlocks = 8192,
  ) {}

  /**
   * Reads [logical, +len) from the `mirror`-th copy this device holds (data
   * reads: no per-block checksum here). A range over several stripe
   * elements is gathered piece by piece.
   */
  async readLogical(logical: bigint, len: number, mirror = 0): Promise<Buffer> {
    const pieces = this.chunks.mapRange(logical, len);
    const bufs: Buffer[] = [];
    for (const p of pieces) {
      const copies = this.reachable(p.copies, p.logical);
      const c = copies[Math.min(mirror, copies.length - 1)]!;
      bufs.push(await this.readPhysical(c.physical, p.length, p.logical));
    }
    return bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs, len);
  }

  /** How many copies of the block or sector at `logical` this device holds. */
  numCopies(logical: bigint): number {
    return this.chunks.map(logical, 1).filter((c) => c.devid === this.devid).length;
  }

  /**
   * The copies on this reader's device. When there are none the range is
   * unreadable here, which is an I/O error of this read alone: the rest of a
   * degraded filesystem stays readable.
   */
  private reachable(copies: PhysicalCopy[], logical: bigint): PhysicalCopy[] {
    const here = copies.filter((c) => c.devid === this.devid);
    if (here.length > 0) return here;
    const missing = [...new Set(copies.map((c) => c.devid))];
    const which = missing.length === 1 ? `device ${missing[0]}, which is` : `devices ${missing.join(', ')}, which are`;
    throw new BtrfsError('EIO', `logical ${logical} is stored only on ${which} missing (this is device ${this.devid})`, { block: logical });
  }

  private async readPhysical(physical: bigint, len: number, logical: bigint): Promise<Buffer> {
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
      } else {
        checkFirstKey(b, exp);
      }
      return b;
    }
    const hit = this.cache.get(exp.bytenr);
    if (hit && (exp.generation === undefined || hit.generation === exp.generation) && (exp.level === undefined || hit.level === exp.level)) {
      this.stats.hits++;
      this.cache.delete(exp.bytenr);
      this.cache.set(exp.bytenr, hit);
      // this pointer may disagree with the one the block was first read through (snapshots share blocks)
      checkFirstKey(hit, exp);
      return hit;
    }
    // Copies on a missing device are not tried: they are not bad, only absent.
    const copies = this.reachable(this.chunks.map(exp.bytenr, this.ctx.nodesize), exp.bytenr);
    let firstErr: unknown;
    for (let i = 0; i < copies.length; i++) {
      const c = copies[i]!;
      try {
        this.stats.reads++;
        const buf = await this.readPhysical(c.physical, this.ctx.nodesize, exp.bytenr);
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
