/**
 * An image cut off after an fsync but before the next commit carries a log
 * tree. dump-tree must print it as btrfs-progs does; the library shows the
 * last committed state (it does not replay the log) and says so through
 * FsInfo.logRoot, where a kernel mount would replay the log.
 */
import { expect } from 'chai';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Filesystem } from '../../src/fs/filesystem.js';
import { dumpTree } from '../../src/inspect/dump-tree.js';
import { requireNativeOrSkip, mkfs, withMount, run, runOk } from '../helpers/kernel.js';

describe('native: images with an unreplayed log tree', function () {
  this.timeout(120_000);
  let work: string;
  let crash: string;
  before(async function () {
    await requireNativeOrSkip(this);
    work = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-log-'));
    const img = path.join(work, 'live.img');
    crash = path.join(work, 'crash.img');
    await mkfs(img, 128 * 1024 * 1024);
    // commit=300 keeps the transaction open; copying the backing file after an
    // fsync captures what a power cut at that moment would leave.
    await withMount(img, { options: 'commit=300' }, async (mnt) => {
      await fsp.writeFile(path.join(mnt, 'committed'), 'committed\n');
      await runOk('sync', []);
      const fh = await fsp.open(path.join(mnt, 'fsynced'), 'w');
      await fh.write('fsynced, not committed\n');
      await fh.sync();
      await fh.close();
      await runOk('cp', ['--sparse=always', img, crash]);
    });
  });
  after(async () => {
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  it('dump-tree prints the log root tree and log trees exactly as btrfs-progs', async () => {
    const fs = await Filesystem.open(crash);
    try {
      expect(fs.info.logRoot, 'the copy should carry a log tree').to.not.equal(undefined);
      const parts: string[] = [];
      await dumpTree(fs.info, (s) => parts.push(s), { utc: true });
      const theirs = (await run('btrfs', ['inspect-internal', 'dump-tree', crash], { env: { ...process.env, TZ: 'UTC' } })).stdout;
      const want = theirs.split('\n').filter((l) => !l.startsWith('btrfs-progs v'));
      const ours = parts.join('').split('\n');
      const at = ours.findIndex((l, i) => l !== want[i]);
      const around = (ls: string[]) => ls.slice(Math.max(0, at - 5), at + 10).join('\n');
      expect(ours, at < 0 ? 'lengths differ' : `first difference at line ${at + 1}:\n--- ours\n${around(ours)}\n--- btrfs-progs\n${around(want)}`).to.deep.equal(want);
      expect(parts.join('')).to.match(/^log root tree$/m);
    } finally {
      await fs.close();
    }
  });

  it('the library shows the last committed state; the kernel replays the log', async () => {
    const fs = await Filesystem.open(crash);
    try {
      expect(await fs.readdir('/')).to.deep.equal(['committed']);
    } finally {
      await fs.close();
    }
    const copy = path.join(work, 'replay.img');
    await runOk('cp', ['--sparse=always', crash, copy]);
    await withMount(copy, {}, async (mnt) => {
      expect((await fsp.readdir(mnt)).sort()).to.deep.equal(['committed', 'fsynced']);
    });
  });
});
