/**
 * Chains made entirely by tsbtrfs, judged by the kernel: a subvolume filled
 * and changed by seeded random POSIX operations and reflinks in an image we
 * write, snapshotted read-only after each of 5 rounds; our full stream and 5
 * incrementals (protocol 1 or 2, by seed) received by the real `btrfs
 * receive` on a kernel mount and by our receive into a second image. At
 * every step the kernel's view of our snapshot, of its kernel-received copy
 * and of our received copy must be the same tree, and every image must pass
 * btrfs check. TSBTRFS_SEED=n reproduces a run.
 */
import { expect } from 'chai';
import { promises as fsp, createReadStream, createWriteStream } from 'node:fs';
import * as path from 'node:path';
import { mkfs as ourMkfs } from '../../src/mkfs/index.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { send } from '../../src/send/index.js';
import { receive } from '../../src/receive/apply.js';
import { mulberry32 } from '../../src/util/random.js';
import { requireNativeOrSkip } from '../helpers/kernel.js';
import { expectClean } from '../helpers/strict.js';
import { randomOps, onOurs } from '../helpers/random-ops.js';
import { seedsFromEnv } from '../native/random-tree.js';
import { Mounted, mkfs, kernelReceive, kernelDump, compareTrees, tempDir, MiB } from '../send/send-kit.js';

const ROUNDS = 5;

describe('send + receive: chains made by tsbtrfs, received by the kernel and by tsbtrfs', function () {
  this.timeout(3_600_000);
  let dir: string;
  const mounts: Mounted[] = [];
  before(async function () {
    await requireNativeOrSkip(this);
    dir = await tempDir('tsbtrfs-ours-chain-');
  });
  afterEach(async () => { for (const m of mounts.splice(0)) await m.close(); });
  after(async () => { if (dir) await fsp.rm(dir, { recursive: true, force: true }); });

  it('full + 5 incrementals of random operations: our snapshots, the kernel\'s receive and ours agree at every step', async () => {
    for (const seed of seedsFromEnv(1)) {
      console.log(`      seed ${seed} (TSBTRFS_SEED=${seed} reproduces)`);
      const work = path.join(dir, `s${seed}`);
      await fsp.mkdir(work);
      const r = mulberry32(seed);
      const proto = seed % 2 === 1 ? 1 : 2;
      const img = path.join(work, 'a.img');
      await ourMkfs(img, { size: 512 * MiB, nodesize: r() < 0.3 ? 4096 : 16384 });
      const snaps: string[] = [];
      const w = await WritableFilesystem.open(img, { umask: 0 });
      let applied = 0;
      try {
        await w.createSubvolume('/vol');
        await w.mkdir('/vol/top');
        for (let round = 0; round <= ROUNDS; round++) {
          for (const o of randomOps(seed + round * 7919, round === 0 ? 500 : 150, '/vol/top')) if ((await onOurs(w, o)) === 'ok') applied++;
          // reflinks between the files there are
          const files = (await w.readdir('/vol/top', { withFileTypes: true })).filter((d) => d.isFile()).map((d) => `/vol/top/${d.name}`);
          if (files.length >= 2 && r() < 0.7) {
            const [a, b] = [files[Math.floor(r() * files.length)]!, files[Math.floor(r() * files.length)]!];
            if (a !== b) await w.clone(a, b).catch(() => undefined);
          }
          await w.commit();
          await w.snapshot('/vol', `/s${round}`, { readonly: true });
          snaps.push(`s${round}`);
        }
      } finally {
        await w.close();
      }
      console.log(`      ${applied} operations applied in ${ROUNDS + 1} rounds, protocol ${proto}`);
      await expectClean(img);
      // our streams
      const streams: string[] = [];
      const src = await Filesystem.open(img);
      try {
        const ids = new Map((await src.listSubvolumes()).map((s) => [s.path.replace(/^\//, ''), s.id]));
        for (let i = 0; i < snaps.length; i++) {
          const f = path.join(work, `${snaps[i]}.stream`);
          await send(src, { snapshot: ids.get(snaps[i]!)!, parent: i > 0 ? ids.get(snaps[i - 1]!) : undefined, proto, out: createWriteStream(f) });
          streams.push(f);
        }
      } finally {
        await src.close();
      }
      for (const f of streams) await kernelDump(f);
      // the kernel's receive
      const kimg = path.join(work, 'k.img');
      await mkfs(kimg, 512 * MiB);
      const k = await Mounted.open(kimg, path.join(work, 'mk'));
      mounts.push(k);
      for (const f of streams) await kernelReceive(f, k.mnt);
      // ours
      const oimg = path.join(work, 'o.img');
      await ourMkfs(oimg, { size: 512 * MiB });
      for (const f of streams) {
        const fs = await WritableFilesystem.open(oimg);
        try {
          await receive(fs, '/', createReadStream(f));
        } finally {
          await fs.close();
        }
      }
      await expectClean(oimg);
      const a = await Mounted.open(img, path.join(work, 'ma'), ['ro']);
      mounts.push(a);
      const o = await Mounted.open(oimg, path.join(work, 'mo'), ['ro']);
      mounts.push(o);
      let entries = 0;
      for (const s of snaps) {
        for (const [who, m] of [['kernel receive', k], ['our receive', o]] as const) {
          const c = await compareTrees(path.join(a.mnt, s), path.join(m.mnt, s));
          expect(c.diffs, `seed ${seed} ${s} via ${who}:\n${c.diffs.slice(0, 20).join('\n')}`).to.deep.equal([]);
          entries += c.entries;
        }
      }
      console.log(`      ${snaps.length} snapshots x 2 receivers, ${entries} entries compared`);
    }
  });
});
