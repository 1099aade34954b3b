/**
 * The check's read merger: reads asked for in one turn are served by as few
 * device reads as adjacency allows, each caller gets exactly its bytes, and
 * one bad range fails alone, over a device with only async reads and over a
 * file (which it reads with readSync).
 */
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BlockDevice } from '../../src/device/block-device.js';
import { FileDevice } from '../../src/device/file-device.js';
import { MemoryDevice } from '../../src/device/memory-device.js';
import { CoalescingDevice } from '../../src/check/coalescing-device.js';
import { BtrfsError } from '../../src/util/errors.js';

/** Counts the reads that reach `d`. */
function counted(d: BlockDevice): { dev: BlockDevice; reads: () => number } {
  let n = 0;
  const dev: BlockDevice = {
    get size() { return d.size; }, readOnly: true, name: d.name,
    read: (o, l) => { n++; return d.read(o, l); },
    write: (o, b) => d.write(o, b), flush: () => d.flush(), close: () => d.close(),
  };
  if (d.readSync) dev.readSync = (o, l) => { n++; return d.readSync!(o, l); };
  return { dev, reads: () => n };
}

describe('check: coalescing device', () => {
  const data = crypto.randomBytes(256 * 1024);
  let dir: string;
  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-coalesce-')); });
  after(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  const devices: [string, () => Promise<BlockDevice>][] = [
    ['memory (async reads only)', async () => MemoryDevice.fromBuffer(data, { readOnly: true })],
    ['file (readSync)', async () => {
      const img = path.join(dir, 'c.img');
      fs.writeFileSync(img, data);
      return FileDevice.open(img, { readOnly: true });
    }],
  ];
  for (const [what, open] of devices) {
    it(`merges adjacent reads and hands each caller its bytes: ${what}`, async () => {
      const base = await open();
      const { dev, reads } = counted(base);
      const c = new CoalescingDevice(dev, false);
      // Out of order, adjacent in pairs, one apart from the rest.
      const asks: [number, number][] = [[16384, 16384], [0, 16384], [32768, 4096], [100_000, 512]];
      const got = await Promise.all(asks.map(([o, l]) => c.read(o, l)));
      asks.forEach(([o, l], i) => expect(got[i]!.equals(data.subarray(o, o + l)), `read ${i}`).to.equal(true));
      expect(reads()).to.equal(2);
      await base.close();
    });

    it(`fails a bad range alone, not the reads merged with it: ${what}`, async () => {
      const base = await open();
      const c = new CoalescingDevice(base, false);
      const end = data.length;
      const [ok, bad] = await Promise.allSettled([c.read(end - 8192, 4096), c.read(end - 4096, 8192)]);
      expect(ok.status).to.equal('fulfilled');
      expect((ok as PromiseFulfilledResult<Buffer>).value.equals(data.subarray(end - 8192, end - 4096))).to.equal(true);
      expect(bad.status).to.equal('rejected');
      const e = (bad as PromiseRejectedResult).reason as BtrfsError;
      expect(e).to.be.instanceOf(BtrfsError);
      expect(e.code).to.equal('EIO');
      await base.close();
    });
  }
});
