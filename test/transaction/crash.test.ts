/**
 * Crash safety of commit: the write stream of a commit is cut at every
 * point (and the last write torn), and every image a power cut could leave
 * must open, pass our check (and btrfs check on a sample), and hold exactly
 * the previous or the new commit — never something in between.
 *
 * The simulated disk writes 4 KiB sectors atomically (as 4Kn and most
 * 512e drives do), so a superblock write never tears; tree blocks and data
 * do tear.
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { MemoryDevice } from '../../src/device/memory-device.js';
import { FaultyDevice } from '../../src/device/faulty-device.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { mkfs, btrfsCheck, requireNativeOrSkip } from '../helpers/kernel.js';
import { addRawFile, removeRawFile, pseudoRandom, type RawFile } from '../helpers/raw-files.js';
import { createSnapshot } from '../../src/subvol/create.js';
import { cleanStep } from '../../src/subvol/delete.js';
import { deleteSubvolume, syncDeleted } from '../../src/subvol/manage.js';
import { RootLocks } from '../../src/subvol/root-lock.js';

const MiB = 1024 * 1024;

type State = Map<string, string>;

function stateOf(files: Map<string, RawFile>): State {
  return new Map([...files.values()].map((f) => [f.name, f.sha256]));
}

async function readState(bytes: Buffer): Promise<{ gen: bigint; state: State }> {
  const fsys = await Filesystem.open(MemoryDevice.fromBuffer(bytes, { readOnly: true }));
  try {
    const state: State = new Map();
    for (const name of await fsys.readdir('/')) {
      state.set(name, createHash('sha256').update(await fsys.readFile('/' + name) as Buffer).digest('hex'));
    }
    return { gen: fsys.info.sb.generation, state };
  } finally {
    await fsys.close();
  }
}

function sameState(a: State, b: State): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}

describe('write engine: crash at every write of a commit', function () {
  this.timeout(900_000);
  let dir: string;
  let base: Buffer;

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-crash-'));
    const img = path.join(dir, 'base.img');
    await mkfs(img, 128 * MiB);
    base = await fs.readFile(img);
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  /**
   * Commit 1 on a fresh image, then commit 2 (adds, overwrites by delete +
   * add, deletes) stopped by a failing flush number `failFlush` of commit 2.
   */
  async function scenario(failFlush: number): Promise<{ dev: FaultyDevice; before: State; after: State; gen1: bigint }> {
    const dev = new FaultyDevice(MemoryDevice.fromBuffer(Buffer.from(base)), { sectorSize: 4096 });
    const w = await FsWriter.open(dev);
    const files = new Map<string, RawFile>();
    let t = w.transaction();
    for (let i = 0; i < 60; i++) {
      const f = await addRawFile(t, `f${i}`, pseudoRandom(4096 * (1 + (i % 7)), i + 1));
      files.set(f.name, f);
    }
    const c1 = await w.commit();
    const before = stateOf(files);
    t = w.transaction();
    for (let i = 0; i < 60; i += 3) {
      await removeRawFile(t, files.get(`f${i}`)!);
      files.delete(`f${i}`);
    }
    for (let i = 0; i < 400; i++) {
      const f = await addRawFile(t, `g${i}`, i % 10 === 0 ? pseudoRandom(8192, 500 + i) : Buffer.alloc(0));
      files.set(f.name, f);
    }
    const after = stateOf(files);
    dev.injectFault({ op: 'flush', nth: failFlush });
    let failed = false;
    try {
      await w.commit();
    } catch {
      failed = true;
    }
    expect(failed, 'the injected flush failure surfaces from commit').to.equal(true);
    return { dev, before, after, gen1: c1!.generation };
  }

  async function judge(bytes: Buffer, before: State, after: State, label: string, progs: boolean): Promise<'old' | 'new'> {
    const { state } = await readState(bytes);
    const which = sameState(state, before) ? 'old' : sameState(state, after) ? 'new' : undefined;
    expect(which, `${label}: content is neither the old nor the new commit`).to.not.equal(undefined);
    const report = await checkImage(MemoryDevice.fromBuffer(bytes, { readOnly: true }));
    expect(report.findings.filter((f) => f.severity === 'error').map(formatFinding), label).to.deep.equal([]);
    if (progs) {
      const img = path.join(dir, 'cut.img');
      await fs.writeFile(img, bytes);
      const r = await btrfsCheck(img);
      expect(r.ok, `${label}\n${r.output}`).to.equal(true);
    }
    return which!;
  }

  it('cut anywhere in the tree block writes (before the first flush): always the old commit', async () => {
    const { dev, before, after } = await scenario(1);
    const n = dev.writesSinceFlush;
    expect(n).to.be.greaterThan(20);
    for (let keep = 0; keep <= n; keep++) {
      for (const tear of keep > 0 ? [false, true] : [false]) {
        const label = `keep ${keep}/${n}${tear ? ' torn' : ''}`;
        const { bytes } = await dev.crash({ keep, tear, seed: keep });
        const progs = keep === n || keep % 25 === 0;
        expect(await judge(bytes, before, after, label, progs)).to.equal('old');
      }
    }
  });

  it('cut in the superblock writes: the old commit until the primary superblock lands, then the new one', async () => {
    const { dev, before, after } = await scenario(2);
    const n = dev.writesSinceFlush;
    expect(n).to.be.within(1, 3);
    const seen: string[] = [];
    for (let keep = 0; keep <= n; keep++) {
      const { bytes } = await dev.crash({ keep, tear: keep > 0, seed: keep });
      seen.push(await judge(bytes, before, after, `superblock keep ${keep}/${n}`, true));
    }
    expect(seen[0]).to.equal('old');
    expect(seen.slice(1).every((s) => s === 'new')).to.equal(true);
  });
});

describe('subvolumes: crash at every write of a deletion and of a cleaning step', function () {
  this.timeout(900_000);
  let dir: string;
  let base: Buffer;

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-crash-del-'));
    const img = path.join(dir, 'base.img');
    await mkfs(img, 128 * MiB, ['-n', '4096']);
    // a snapshot that shares most of its tree with the top level, and files of its own
    const w = await FsWriter.open(MemoryDevice.fromBuffer(await fs.readFile(img)));
    let t = w.transaction();
    for (let i = 0; i < 400; i++) await addRawFile(t, `f${i}`, i % 8 === 0 ? pseudoRandom(8192, i + 1) : Buffer.alloc(0));
    await w.commit();
    t = w.transaction();
    const snap = await createSnapshot(t, 5n, { parentTree: 5n, parentDir: 256n, name: Buffer.from('snap') }, { sec: 1n, nsec: 0 });
    await w.commit();
    t = w.transaction();
    for (let i = 0; i < 60; i++) await addRawFile(t, `s${i}`, pseudoRandom(4096, 90 + i), 4096, { tree: snap, dir: 256n });
    await w.commit();
    base = (w.info.device as MemoryDevice).snapshot();
    await w.close();
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  /** Every cut of the commit that `step` ends in opens, checks clean, and can be cleaned to the end. */
  async function cutEverywhere(prepare: (w: FsWriter) => Promise<void>, step: (w: FsWriter) => Promise<void>): Promise<number> {
    let cuts = 0;
    for (const failFlush of [1, 2]) {
      const dev = new FaultyDevice(MemoryDevice.fromBuffer(Buffer.from(base)), { sectorSize: 4096 });
      const w = await FsWriter.open(dev);
      await prepare(w);
      dev.injectFault({ op: 'flush', nth: failFlush });
      let failed = false;
      try { await step(w); } catch { failed = true; }
      expect(failed).to.equal(true);
      const n = dev.writesSinceFlush;
      for (let keep = 0; keep <= n; keep++) {
        const { bytes } = await dev.crash({ keep, tear: keep > 0, seed: keep });
        cuts++;
        const report = await checkImage(MemoryDevice.fromBuffer(bytes, { readOnly: true }));
        expect(report.findings.filter((f) => f.severity === 'error').map(formatFinding), `flush ${failFlush} keep ${keep}`).to.deep.equal([]);
        if (keep === n || keep % 20 === 0) {
          const img = path.join(dir, 'cut.img');
          await fs.writeFile(img, bytes);
          const r = await btrfsCheck(img);
          expect(r.ok, r.output).to.equal(true);
        }
        // the cleaner resumes from whatever the cut left and finishes
        const w2 = await FsWriter.open(MemoryDevice.fromBuffer(Buffer.from(bytes)));
        const ctx = { writer: w2, locks: new RootLocks(), now: () => ({ sec: 2n, nsec: 0 }) };
        await syncDeleted(ctx, { budget: 4 });
        const after = await checkImage(MemoryDevice.fromBuffer((w2.info.device as MemoryDevice).snapshot(), { readOnly: true }));
        expect(after.findings.filter((f) => f.severity === 'error').map(formatFinding), `after cleaning, flush ${failFlush} keep ${keep}`).to.deep.equal([]);
        await w2.close();
      }
    }
    return cuts;
  }

  it('deleting a snapshot: cut anywhere, the image is consistent and cleaning completes', async () => {
    const cuts = await cutEverywhere(async () => undefined, async (w) => {
      await deleteSubvolume({ writer: w, locks: new RootLocks(), now: () => ({ sec: 2n, nsec: 0 }) }, 256n);
    });
    expect(cuts).to.be.greaterThan(10);
  });

  it('a cleaning step: cut anywhere, the image is consistent and cleaning resumes', async () => {
    const cuts = await cutEverywhere(async (w) => {
      await deleteSubvolume({ writer: w, locks: new RootLocks(), now: () => ({ sec: 2n, nsec: 0 }) }, 256n);
      const t = w.transaction();
      await cleanStep(t, 256n, 3);
      await w.commit();
    }, async (w) => {
      const t = w.transaction();
      await cleanStep(t, 256n, 3);
      await w.commit();
    });
    expect(cuts).to.be.greaterThan(10);
  });
});
