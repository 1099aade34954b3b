/**
 * The inode worker (check/inode-worker.ts) gives the same findings as the
 * pass in the main thread. It runs by default only on 4+ cores with big
 * subvolumes, so on a small CI machine nothing else would reach it: here it
 * is forced (parallel: true) on damaged btrfs-progs corpus images (inode,
 * directory and link errors in root 5 and in a subvolume) and on the
 * fixtures, and every finding must match the in-thread run's.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { fixturePath, listFixtures, repoRoot } from '../helpers/fixtures.js';

const CORPUS = path.resolve(repoRoot(), '..', 'shared', 'corpus');
const DAMAGED = [
  'fsck-tests/004-no-dir-index/default_case.img',
  'fsck-tests/011-no-inode-item/default_case.img',
  'fsck-tests/016-wrong-inode-nbytes/default_case.img.xz',
  'fsck-tests/039-bad-inode-mode/bad_imodes_in_subvolume_tree.img.xz',
];

async function both(img: string): Promise<{ worker: string[]; inThread: string[] }> {
  const lines = async (parallel: boolean): Promise<string[]> => (await checkImage(img, { parallel })).findings.map(formatFinding).sort();
  return { worker: await lines(true), inThread: await lines(false) };
}

describe('check: the inode worker and the in-thread pass agree', function () {
  this.timeout(300_000);
  let dir: string;
  before(() => { dir = mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-parallel-')); });
  after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it('on damaged corpus images (btrfs-image dumps, restored)', function () {
    if (!existsSync(CORPUS) || spawnSync('btrfs-image', ['-h']).error) this.skip();
    return (async () => {
      for (const rel of DAMAGED) {
        const src = path.join(CORPUS, rel);
        let dump = src;
        if (rel.endsWith('.xz')) {
          dump = path.join(dir, path.basename(rel, '.xz') + '.dump');
          expect(spawnSync('sh', ['-c', `xz -dc ${JSON.stringify(src)} > ${JSON.stringify(dump)}`]).status, rel).to.equal(0);
        }
        const img = path.join(dir, rel.replace(/[/.]/g, '_') + '.raw');
        const r = spawnSync('btrfs-image', ['-r', dump, img]);
        expect(r.status, `${rel}: ${r.stderr}`).to.equal(0);
        const { worker, inThread } = await both(img);
        expect(inThread.some((l) => /^ERROR/.test(l)), `${rel} has errors`).to.equal(true);
        expect(worker, rel).to.deep.equal(inThread);
      }
    })();
  });

  it('on every fixture', async () => {
    for (const name of await listFixtures()) {
      const { worker, inThread } = await both(await fixturePath(name));
      expect(worker, name).to.deep.equal(inThread);
    }
  });
});
