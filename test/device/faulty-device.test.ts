import { expect } from 'chai';
import { FaultyDevice, MemoryDevice } from '../../src/device/index.js';
import { BtrfsError } from '../../src/util/errors.js';
import { rejects } from '../helpers/expect-error.js';


/** Deterministic pseudo-random bytes so failures reproduce. */
function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

interface W { offset: number; data: Buffer }

function apply(base: Buffer, writes: W[]): Buffer {
  const out = Buffer.from(base);
  for (const w of writes) w.data.copy(out, w.offset);
  return out;
}

describe('device/FaultyDevice', () => {
  describe('injected faults', () => {
    it('fails exactly the Nth write with EIO and does not apply it', async () => {
      for (let n = 1; n <= 5; n++) {
        const mem = new MemoryDevice(4096);
        const dev = new FaultyDevice(mem, { faults: [{ op: 'write', nth: n }] });
        for (let i = 1; i <= 5; i++) {
          const p = dev.write(i * 100, Buffer.from(`w${i}`));
          if (i === n) {
            const e = await rejects(p, 'EIO', `write #${n}`);
            expect(e.message).to.contain(`offset ${i * 100}`);
          } else {
            await p;
          }
        }
        for (let i = 1; i <= 5; i++) {
          const got = (await mem.read(i * 100, 2)).toString('latin1');
          expect(got).to.equal(i === n ? '\0\0' : `w${i}`);
        }
        expect(dev.totalWrites).to.equal(4);
        expect(dev.writesSinceFlush).to.equal(4);
        expect(dev.callCounts.write).to.equal(5);
      }
    });

    it('sticky faults fail every later call too', async () => {
      const dev = new FaultyDevice(new MemoryDevice(4096), { faults: [{ op: 'write', nth: 2, sticky: true }] });
      await dev.write(0, Buffer.from('a'));
      await rejects(dev.write(1, Buffer.from('b')), 'EIO');
      await rejects(dev.write(2, Buffer.from('c')), 'EIO');
      await dev.read(0, 1);
    });

    it('counts nth from injection and can use another code', async () => {
      const dev = new FaultyDevice(new MemoryDevice(4096));
      await dev.read(0, 1);
      await dev.read(0, 1);
      dev.injectFault({ op: 'read', nth: 2, code: 'EUCLEAN' });
      await dev.read(0, 1);
      await rejects(dev.read(0, 1), 'EUCLEAN', 'read #2');
      await dev.read(0, 1);
      dev.clearFaults();
      dev.injectFault({ op: 'read', nth: 1 });
      dev.clearFaults();
      await dev.read(0, 1);
    });

    it('a failed flush makes nothing durable', async () => {
      const dev = new FaultyDevice(new MemoryDevice(4096), { faults: [{ op: 'flush', nth: 1 }] });
      await dev.write(0, Buffer.from('abc'));
      await rejects(dev.flush(), 'EIO', 'flush #1');
      expect(dev.writesSinceFlush).to.equal(1);
      expect(dev.totalFlushes).to.equal(0);
      expect((await dev.crashImage({ keep: 0 })).subarray(0, 3).equals(Buffer.alloc(3))).to.equal(true);
      await dev.flush();
      expect(dev.writesSinceFlush).to.equal(0);
      expect(dev.totalFlushes).to.equal(1);
      expect((await dev.crashImage({ keep: 0 })).subarray(0, 3).toString()).to.equal('abc');
    });

    it('passes through read-only and closes the inner device', async () => {
      const mem = MemoryDevice.fromBuffer(Buffer.alloc(16), { readOnly: true, name: 'ro' });
      const dev = new FaultyDevice(mem);
      expect(dev.readOnly).to.equal(true);
      expect(dev.name).to.equal('ro');
      await rejects(dev.write(0, Buffer.from('x')), 'EROFS');
      await dev.close();
      await rejects(mem.read(0, 1), 'EBADF');
      await rejects(dev.read(0, 1), 'EBADF');
      await rejects(dev.crashImage({ keep: 0 }), 'EBADF');
    });
  });

  describe('crash images', () => {
    const SIZE = 8192;
    const SECTOR = 512;

    // Overlapping, unaligned, single- and multi-sector writes.
    const before: W[] = [
      { offset: 0, data: pattern(1024, 1) },
      { offset: 3000, data: pattern(700, 2) },
    ];
    const after: W[] = [
      { offset: 100, data: pattern(50, 3) }, // inside one sector: cannot tear
      { offset: 500, data: pattern(2000, 4) }, // spans 5 sectors, unaligned
      { offset: 1024, data: pattern(1024, 5) }, // aligned, overlaps the previous
      { offset: 4096, data: pattern(4096, 6) }, // aligned, 8 sectors, to the end
      { offset: 510, data: pattern(4, 7) }, // straddles one boundary
      { offset: 1500, data: pattern(3000, 8) }, // overlaps several earlier ones
    ];

    async function setup(): Promise<{ dev: FaultyDevice; base: Buffer; durable: Buffer }> {
      const base = pattern(SIZE, 99);
      const dev = new FaultyDevice(MemoryDevice.fromBuffer(base), { sectorSize: SECTOR });
      for (const w of before) await dev.write(w.offset, w.data);
      await dev.flush();
      for (const w of after) await dev.write(w.offset, w.data);
      return { dev, base, durable: apply(base, before) };
    }

    it('exposes the cut points', async () => {
      const { dev } = await setup();
      expect(dev.writesSinceFlush).to.equal(after.length);
      expect(dev.totalWrites).to.equal(before.length + after.length);
      expect(dev.unflushedWrites()).to.deep.equal(after.map((w) => ({ offset: w.offset, length: w.data.length })));
    });

    it('keeps exactly the first `keep` unflushed writes at every cut point', async () => {
      const { dev, durable } = await setup();
      for (let keep = 0; keep <= dev.writesSinceFlush; keep++) {
        const r = await dev.crash({ keep });
        expect(r.torn).to.equal(undefined);
        expect(r.bytes.equals(apply(durable, after.slice(0, keep))), `keep=${keep}`).to.equal(true);
      }
      // the device itself still holds every write
      expect((await dev.read(0, SIZE)).equals(apply(durable, after))).to.equal(true);
    });

    it('tears the last kept write to a strict sector-aligned prefix', async () => {
      const { dev, durable } = await setup();
      const seen = new Map<number, Set<number>>();
      for (let seed = 1; seed <= 40; seed++) {
        for (let keep = 0; keep <= dev.writesSinceFlush; keep++) {
          const r = await dev.crash({ keep, tear: true, seed });
          const model = apply(durable, after.slice(0, Math.max(0, keep - 1)));
          if (keep === 0) {
            expect(r.torn).to.equal(undefined);
            expect(r.bytes.equals(durable)).to.equal(true);
            continue;
          }
          const w = after[keep - 1]!;
          const spansSectors = Math.floor(w.offset / SECTOR) !== Math.floor((w.offset + w.data.length - 1) / SECTOR);
          if (!spansSectors) {
            expect(r.torn, `keep=${keep} fits a sector`).to.equal(undefined);
            expect(r.bytes.equals(apply(model, [w]))).to.equal(true);
            continue;
          }
          const t = r.torn!;
          expect(t.index).to.equal(keep - 1);
          expect(t.offset).to.equal(w.offset);
          expect(t.length).to.equal(w.data.length);
          expect(t.written).to.be.greaterThan(0);
          expect(t.written).to.be.lessThan(w.data.length);
          expect((w.offset + t.written) % SECTOR).to.equal(0);
          const expected = apply(model, [{ offset: w.offset, data: w.data.subarray(0, t.written) }]);
          expect(r.bytes.equals(expected), `keep=${keep} seed=${seed}`).to.equal(true);
          if (!seen.has(keep)) seen.set(keep, new Set());
          seen.get(keep)!.add(t.written);
          // the same seed gives the same tear
          expect((await dev.crash({ keep, tear: true, seed })).torn).to.deep.equal(t);
        }
      }
      // seeds actually vary the tear point of the 8-sector write
      expect(seen.get(4)!.size).to.be.greaterThan(3);
    });

    it('rejects keep outside 0..writesSinceFlush', async () => {
      const { dev } = await setup();
      await rejects(dev.crash({ keep: after.length + 1 }), 'EINVAL');
      await rejects(dev.crash({ keep: -1 }), 'EINVAL');
    });

    it('undoes growth of a growable device', async () => {
      const dev = new FaultyDevice(new MemoryDevice(1024, { growable: true }), { sectorSize: 512 });
      await dev.write(0, Buffer.alloc(1024, 1));
      await dev.flush();
      await dev.write(1000, Buffer.alloc(2048, 2)); // grows to 3048
      await dev.write(4000, Buffer.alloc(100, 3)); // grows to 4100 with a zero gap
      expect(dev.size).to.equal(4100);
      expect((await dev.crashImage({ keep: 0 })).equals(Buffer.alloc(1024, 1))).to.equal(true);
      const one = await dev.crashImage({ keep: 1 });
      expect(one.length).to.equal(3048);
      expect(one.subarray(1000).equals(Buffer.alloc(2048, 2))).to.equal(true);
      const torn = await dev.crash({ keep: 1, tear: true, seed: 3 });
      const end = 1000 + torn.torn!.written;
      expect(torn.bytes.length).to.equal(Math.max(1024, end));
      expect(torn.bytes.subarray(1000, end).equals(Buffer.alloc(end - 1000, 2))).to.equal(true);
      expect(torn.bytes.subarray(0, 1000).equals(Buffer.alloc(1000, 1))).to.equal(true);
      expect((await dev.crashImage({ keep: 2 })).length).to.equal(4100);
    });

    it('serialises concurrent writes so the log stays exact', async () => {
      const base = Buffer.alloc(4096);
      const dev = new FaultyDevice(MemoryDevice.fromBuffer(base));
      const ws: W[] = [];
      for (let i = 0; i < 20; i++) ws.push({ offset: (i * 37) % 3000, data: pattern(600, i + 10) });
      await Promise.all(ws.map((w) => dev.write(w.offset, w.data)));
      for (let keep = 0; keep <= ws.length; keep++) {
        expect((await dev.crashImage({ keep })).equals(apply(base, ws.slice(0, keep))), `keep=${keep}`).to.equal(true);
      }
    });
  });
});
