/**
 * A TreeStore in memory, for tests of the COW B-tree and of layers above it
 * before the extent allocator exists. It is strict where a real store would
 * corrupt silently: freeing a block twice, freeing or writing a block it never
 * handed out, or writing a block of an earlier generation (which would edit a
 * committed tree in place) all throw. Bytenrs are never reused, so every
 * committed root stays readable.
 */
import { BtrfsError } from '../util/errors.js';
import { checkTreeBlock, type CheckContext } from '../verify/tree-checker.js';
import type { TreeBlock } from '../format/tree-block.js';
import type { TreeStore } from './tree-store.js';
import type { BlockView } from './cow-node.js';

export interface MemoryTreeStoreOptions {
  nodesize?: number;
  csumType?: number;
  generation?: bigint;
  /** the first bytenr handed out; default 30 MiB, like a fresh mkfs */
  firstBytenr?: bigint;
}

export interface AllocRecord { owner: bigint; level: number; generation: bigint }

export class MemoryTreeStore implements TreeStore {
  readonly nodesize: number;
  readonly csumType: number;
  generation: bigint;
  readonly fsid = Buffer.from('7473627472667300a1b2c3d4e5f60718', 'hex');
  readonly chunkTreeUuid = Buffer.from('0011223344556677889900aabbccddee', 'hex');
  /** every block image written, by bytenr (committed and dirty alike) */
  readonly blocks = new Map<bigint, Buffer>();
  readonly allocated = new Map<bigint, AllocRecord>();
  readonly freed = new Set<bigint>();
  stats = { reads: 0, decodes: 0, writes: 0 };
  private nextBytenr: bigint;
  private decoded = new Map<bigint, TreeBlock>();

  constructor(opts: MemoryTreeStoreOptions = {}) {
    this.nodesize = opts.nodesize ?? 16384;
    this.csumType = opts.csumType ?? 0;
    this.generation = opts.generation ?? 7n;
    this.nextBytenr = opts.firstBytenr ?? 30n * 1024n * 1024n;
  }

  get checkContext(): CheckContext {
    return { nodesize: this.nodesize, sectorsize: 4096, csumType: this.csumType, fsid: this.fsid, superGeneration: this.generation };
  }

  async read(bytenr: bigint, level: number, generation?: bigint): Promise<TreeBlock> {
    this.stats.reads++;
    const buf = this.blocks.get(bytenr);
    if (!buf) throw new BtrfsError('EIO', `no block written at ${bytenr}`, { block: bytenr });
    let block = this.decoded.get(bytenr);
    if (!block || block.buf !== buf) {
      this.stats.decodes++;
      block = checkTreeBlock(buf, this.checkContext, { bytenr });
      this.decoded.set(bytenr, block);
    }
    if (block.level !== level) throw new BtrfsError('EUCLEAN', `bad tree block level, want ${level} have ${block.level}`, { block: bytenr });
    if (generation !== undefined && block.generation !== generation) {
      throw new BtrfsError('EUCLEAN', `parent transid verify failed on ${bytenr} wanted ${generation} found ${block.generation}`, { block: bytenr });
    }
    return block;
  }

  async allocBlock(owner: bigint, level: number): Promise<bigint> {
    const bytenr = this.nextBytenr;
    this.nextBytenr += BigInt(this.nodesize);
    this.allocated.set(bytenr, { owner, level, generation: this.generation });
    return bytenr;
  }

  async cowBlock(old: BlockView, owner: bigint): Promise<bigint> {
    const bytenr = await this.allocBlock(owner, old.level);
    this.freeBlock(old.bytenr, owner, old.level);
    return bytenr;
  }

  async dropBlock(old: BlockView, owner: bigint): Promise<void> {
    this.freeBlock(old.bytenr, owner, old.level);
  }

  freeBlock(bytenr: bigint, owner: bigint, level: number): void {
    const rec = this.allocated.get(bytenr);
    if (!rec) throw new BtrfsError('EINVAL', `freeing block ${bytenr} that was never allocated`, { block: bytenr, tree: owner });
    if (this.freed.has(bytenr)) throw new BtrfsError('EINVAL', `block ${bytenr} freed twice`, { block: bytenr, tree: owner });
    if (rec.owner !== owner || rec.level !== level) {
      throw new BtrfsError('EINVAL', `block ${bytenr} freed as owner ${owner} level ${level}, allocated as ${rec.owner}/${rec.level}`, { block: bytenr });
    }
    this.freed.add(bytenr);
  }

  writeDirty(bytenr: bigint, buf: Buffer): void {
    const rec = this.allocated.get(bytenr);
    if (!rec || rec.generation !== this.generation) {
      throw new BtrfsError('EINVAL', `writing block ${bytenr} that this transaction did not allocate`, { block: bytenr });
    }
    if (this.freed.has(bytenr)) throw new BtrfsError('EINVAL', `writing freed block ${bytenr}`, { block: bytenr });
    if (buf.length !== this.nodesize) throw new BtrfsError('EINVAL', `block image of ${buf.length} bytes`, { block: bytenr });
    this.stats.writes++;
    this.blocks.set(bytenr, buf);
  }

  /** Ends the transaction: later changes must copy what was written so far. */
  commit(): void {
    this.generation++;
  }
}
