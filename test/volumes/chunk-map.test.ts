/**
 * The logical → physical map for every profile, and the block reader's
 * degraded reads: a reader that holds one device of several reads the
 * copies on it and fails, naming the missing device, only for ranges that
 * have no copy there.
 */
import { expect } from 'chai';
import { ChunkMap } from '../../src/volumes/chunk-map.js';
import { BlockReader } from '../../src/tree/block-reader.js';
import { MemoryDevice } from '../../src/device/memory-device.js';
import { BLOCK_GROUP } from '../../src/format/constants.js';
import type { ChunkItem } from '../../src/format/items/chunk-item.js';
import { BtrfsError } from '../../src/util/errors.js';
import { rejects } from '../helpers/expect-error.js';

const K64 = 64n * 1024n;
const MiB = 1024n * 1024n;
const START = 100n * MiB;

/** A chunk at START of `length` with stripes (devid, physical start). */
function chunk(type: bigint, length: bigint, stripes: [devid: bigint, offset: bigint][], subStripes = 1): ChunkItem {
  return {
    length, owner: 2n, stripe_len: K64, type: BLOCK_GROUP.DATA | type, io_align: 65536, io_width: 65536, sector_size: 4096,
    num_stripes: stripes.length, sub_stripes: subStripes,
    stripes: stripes.map(([devid, offset]) => ({ devid, offset, dev_uuid: Buffer.alloc(16) })),
  };
}

function mapOf(c: ChunkItem): ChunkMap {
  const m = new ChunkMap();
  m.add(START, c, 4096);
  return m;
}

/** Where byte `rel` of the chunk is, as "devid:physical" per copy. */
const at = (m: ChunkMap, rel: bigint) => m.map(START + rel, 1).map((c) => `${c.devid}:${c.physical}`);

describe('volumes: chunk map', () => {
  it('mirrored profiles map every copy at the same offset into each stripe', () => {
    const raid1 = mapOf(chunk(BLOCK_GROUP.RAID1, 8n * MiB, [[2n, 1n * MiB], [1n, 22n * MiB]]));
    expect(at(raid1, 12345n)).to.deep.equal([`2:${MiB + 12345n}`, `1:${22n * MiB + 12345n}`]);
    const c3 = mapOf(chunk(BLOCK_GROUP.RAID1C3, 8n * MiB, [[1n, 0n], [2n, MiB], [3n, 2n * MiB]]));
    expect(at(c3, 5n * MiB)).to.deep.equal([`1:${5n * MiB}`, `2:${6n * MiB}`, `3:${7n * MiB}`]);
    // Mirrored ranges are contiguous to the end of the chunk: one piece.
    expect(raid1.mapRange(START, 4 * 1024 * 1024)).to.have.length(1);
  });

  it('RAID0 rotates stripe elements over the devices, row by row', () => {
    const m = mapOf(chunk(BLOCK_GROUP.RAID0, 3n * MiB, [[1n, 10n * MiB], [2n, 20n * MiB], [3n, 30n * MiB]]));
    expect(at(m, 0n)).to.deep.equal([`1:${10n * MiB}`]);
    expect(at(m, K64 + 7n)).to.deep.equal([`2:${20n * MiB + 7n}`]);
    expect(at(m, 2n * K64)).to.deep.equal([`3:${30n * MiB}`]);
    // The fourth element starts the second row, back on the first device.
    expect(at(m, 3n * K64 + 5n)).to.deep.equal([`1:${10n * MiB + K64 + 5n}`]);
    expect(at(m, 7n * K64)).to.deep.equal([`2:${20n * MiB + 2n * K64}`]);
  });

  it('RAID10 mirrors each element on a pair of stripes, pairs in turn', () => {
    const m = mapOf(chunk(BLOCK_GROUP.RAID10, 2n * MiB, [[1n, 0n], [2n, MiB], [3n, 2n * MiB], [4n, 3n * MiB]], 2));
    expect(at(m, 100n)).to.deep.equal(['1:100', `2:${MiB + 100n}`]);
    expect(at(m, K64 + 100n)).to.deep.equal([`3:${2n * MiB + 100n}`, `4:${3n * MiB + 100n}`]);
    expect(at(m, 2n * K64)).to.deep.equal([`1:${K64}`, `2:${MiB + K64}`]);
  });

  it('RAID5 and RAID6 map data elements around the rotating parity', () => {
    const r5 = mapOf(chunk(BLOCK_GROUP.RAID5, 2n * MiB, [[1n, 0n], [2n, MiB], [3n, 2n * MiB]]));
    // Row 0: D0 D1 P; row 1: P D0 D1; row 2: D1 P D0.
    expect(at(r5, 0n)).to.deep.equal(['1:0']);
    expect(at(r5, K64)).to.deep.equal([`2:${MiB}`]);
    expect(at(r5, 2n * K64 + 1n)).to.deep.equal([`2:${MiB + K64 + 1n}`]);
    expect(at(r5, 3n * K64)).to.deep.equal([`3:${2n * MiB + K64}`]);
    expect(at(r5, 4n * K64)).to.deep.equal([`3:${2n * MiB + 2n * K64}`]);
    expect(at(r5, 5n * K64)).to.deep.equal([`1:${2n * K64}`]);
    const r6 = mapOf(chunk(BLOCK_GROUP.RAID6, 2n * MiB, [[1n, 0n], [2n, MiB], [3n, 2n * MiB], [4n, 3n * MiB]]));
    // Two data elements per row; row 1 starts on the second device.
    expect(at(r6, K64)).to.deep.equal([`2:${MiB}`]);
    expect(at(r6, 2n * K64)).to.deep.equal([`2:${MiB + K64}`]);
    expect(at(r6, 3n * K64)).to.deep.equal([`3:${2n * MiB + K64}`]);
  });

  it('splits a range at stripe element boundaries and refuses a tree block that crosses one', () => {
    const m = mapOf(chunk(BLOCK_GROUP.RAID0, 2n * MiB, [[1n, 0n], [2n, MiB]]));
    const pieces = m.mapRange(START + K64 - 4096n, Number(K64) + 8192);
    expect(pieces.map((p) => [p.length, p.copies.map((c) => `${c.devid}:${c.physical}`)])).to.deep.equal([
      [4096, [`1:${K64 - 4096n}`]],
      [Number(K64), [`2:${MiB}`]],
      [4096, [`1:${K64}`]],
    ]);
    expect(() => m.map(START + K64 - 4096n, 16384)).to.throw(BtrfsError, /crosses a stripe boundary/);
  });

  it('refuses chunks whose striping cannot be mapped', () => {
    expect(() => mapOf(chunk(BLOCK_GROUP.RAID10, MiB, [[1n, 0n], [2n, 0n], [3n, 0n]], 2))).to.throw(BtrfsError, /RAID10/);
    expect(() => mapOf(chunk(BLOCK_GROUP.RAID10, MiB, [[1n, 0n], [2n, 0n]], 0))).to.throw(BtrfsError, /RAID10/);
    expect(() => mapOf(chunk(BLOCK_GROUP.RAID6, MiB, [[1n, 0n], [2n, 0n]]))).to.throw(BtrfsError, /RAID6/);
  });
});

describe('volumes: degraded reads', () => {
  const ctx = { nodesize: 16384, sectorsize: 4096, csumType: 0, fsid: Buffer.alloc(16), superGeneration: 1n };

  /** Device 1 alone, its bytes a function of their offset so any read can be checked. */
  function device1(): MemoryDevice {
    const buf = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE(i, i);
    return MemoryDevice.fromBuffer(buf, { readOnly: true });
  }
  const word = (b: Buffer, i: number) => b.readUInt32LE(i);

  it('reads the copy on the present device whichever stripe it is', async () => {
    const m = mapOf(chunk(BLOCK_GROUP.RAID1, MiB, [[2n, 0n], [1n, MiB]]));
    const r = new BlockReader(device1(), 1n, m, ctx);
    const b = await r.readLogical(START + 8192n, 4096);
    expect(word(b, 0)).to.equal(Number(MiB) + 8192);
    expect(r.numCopies(START)).to.equal(1);
  });

  it('RAID10 reads the present mirror of each pair', async () => {
    const m = mapOf(chunk(BLOCK_GROUP.RAID10, 2n * MiB, [[2n, 0n], [1n, 0n], [1n, 2n * MiB], [3n, 0n]], 2));
    const r = new BlockReader(device1(), 1n, m, ctx);
    const b = await r.readLogical(START + K64 - 4096n, 8192);
    expect(word(b, 0)).to.equal(Number(K64) - 4096);
    expect(word(b, 4096)).to.equal(Number(2n * MiB));
  });

  it('a range on a missing device fails with EIO naming it, only when read', async () => {
    const m = mapOf(chunk(BLOCK_GROUP.RAID0, 2n * MiB, [[1n, 0n], [2n, 0n]]));
    const r = new BlockReader(device1(), 1n, m, ctx);
    expect(word(await r.readLogical(START + 4096n, 4096), 0)).to.equal(4096);
    const e = await rejects(r.readLogical(START + K64, 4096), 'EIO', 'device 2, which is missing');
    expect(e.block).to.equal(START + K64);
    await rejects(r.readLogical(START, Number(2n * K64)), 'EIO', 'device 2');
    await rejects(r.read({ bytenr: START + K64 }), 'EIO', 'device 2');
    const single = mapOf(chunk(0n, MiB, [[3n, 0n]]));
    await rejects(new BlockReader(device1(), 1n, single, ctx).readLogical(START, 4096), 'EIO', 'device 3, which is missing');
  });
});
