/**
 * mkfs's layout rules, without a device: chunk sizes as mkfs.btrfs 6.2 picks
 * them (values observed with `mkfs.btrfs -q` on sparse files of each size),
 * the minimum size, and tree blocks kept off the superblock mirror stripes.
 */
import { expect } from 'chai';
import { BLOCK_GROUP, SUPER_MIRROR_OFFSETS } from '../../src/format/constants.js';
import {
  dupMetadataStripeBytes, minDeviceBytes, planLayout, superblockOffsets, TreeBlockAllocator, STRIPE_LEN, type ChunkPlan,
} from '../../src/mkfs/layout.js';
import { rejects } from '../helpers/expect-error.js';

const MiB = 1024n * 1024n;
const GiB = 1024n * MiB;

describe('mkfs layout', () => {
  it('sizes DUP metadata as mkfs.btrfs 6.2 does', () => {
    const seen: [bigint, bigint][] = [
      [114n * MiB, 33554432n], [128n * MiB, 33554432n], [512n * MiB, 33554432n], [700n * MiB, 36700160n],
      [1n * GiB, 53673984n], [2n * GiB, 107347968n], [3n * GiB, 268435456n], [5n * GiB, 268435456n],
      [20n * GiB, 268435456n], [50n * GiB, 268435456n], [51n * GiB, 1073741824n], [1024n * GiB, 1073741824n],
    ];
    for (const [size, meta] of seen) expect(dupMetadataStripeBytes(size), `${size / MiB} MiB`).to.equal(meta);
  });

  it('places SYSTEM, METADATA and DATA after the first MiB, copies back to back, logical from 1 MiB', () => {
    const l = planLayout(512n * MiB, 'dup');
    expect(l.system).to.deep.equal({ type: BLOCK_GROUP.SYSTEM | BLOCK_GROUP.DUP, logical: MiB, length: 8n * MiB, stripes: [MiB, 9n * MiB] });
    expect(l.metadata).to.deep.equal({ type: BLOCK_GROUP.METADATA | BLOCK_GROUP.DUP, logical: 9n * MiB, length: 32n * MiB, stripes: [17n * MiB, 49n * MiB] });
    expect(l.data).to.deep.equal({ type: BLOCK_GROUP.DATA, logical: 41n * MiB, length: 8n * MiB, stripes: [81n * MiB] });
    expect(l.devBytesUsed).to.equal(88n * MiB);
    const s = planLayout(512n * MiB, 'single');
    expect(s.chunks.map((c) => [c.type, c.length, c.stripes])).to.deep.equal([
      [BLOCK_GROUP.SYSTEM, 4n * MiB, [MiB]], [BLOCK_GROUP.METADATA, 8n * MiB, [5n * MiB]], [BLOCK_GROUP.DATA, 8n * MiB, [13n * MiB]],
    ]);
  });

  it('refuses a device the three chunks do not fit, naming the minimum and mixed block groups', async () => {
    expect(minDeviceBytes('dup')).to.equal(89n * MiB);
    expect(minDeviceBytes('single')).to.equal(21n * MiB);
    expect(() => planLayout(89n * MiB, 'dup')).to.not.throw();
    for (const [size, profile] of [[89n * MiB - 4096n, 'dup'], [21n * MiB - 4096n, 'single']] as const) {
      await rejects((async () => planLayout(size, profile))(), 'EINVAL', 'mixed');
    }
  });

  it('writes superblock copies only where they end before the filesystem does', () => {
    expect(superblockOffsets(89n * MiB)).to.deep.equal([65536, 64 * 1024 * 1024]);
    expect(superblockOffsets(64n * MiB + 4096n)).to.deep.equal([65536]);
    expect(superblockOffsets(256n * GiB + 4096n)).to.deep.equal([65536, 64 * 1024 * 1024]);
    expect(superblockOffsets(256n * GiB + 8192n)).to.deep.equal(SUPER_MIRROR_OFFSETS);
  });

  it('skips tree blocks whose copy would touch the 64 KiB around a superblock mirror', () => {
    const mirror = BigInt(SUPER_MIRROR_OFFSETS[1]!);
    // second copy starts 16 KiB before the mirror: blocks 0 (ends at it) is fine, then 4 blocks are excluded
    const chunk: ChunkPlan = { type: BLOCK_GROUP.METADATA | BLOCK_GROUP.DUP, logical: 100n * MiB, length: 32n * MiB, stripes: [2n * MiB, mirror - 16384n] };
    const a = new TreeBlockAllocator(chunk, 16384);
    const got = [a.alloc(), a.alloc(), a.alloc()];
    expect(got).to.deep.equal([chunk.logical, chunk.logical + 16384n + STRIPE_LEN, chunk.logical + 2n * 16384n + STRIPE_LEN]);
    for (const b of got) {
      for (const s of chunk.stripes) {
        const p = s + (b - chunk.logical);
        expect(p + 16384n <= mirror || p >= mirror + STRIPE_LEN, `block ${b} copy at ${p}`).to.equal(true);
      }
    }
  });

  it('runs out of room with ENOSPC rather than leaving the chunk', async () => {
    const chunk: ChunkPlan = { type: BLOCK_GROUP.SYSTEM, logical: MiB, length: 65536n, stripes: [MiB] };
    const a = new TreeBlockAllocator(chunk, 65536);
    expect(a.alloc()).to.equal(MiB);
    await rejects((async () => a.alloc())(), 'ENOSPC');
  });
});
