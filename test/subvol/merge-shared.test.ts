/**
 * Leaves and nodes a snapshot shares, emptied into a neighbour by a merge
 * in the source (deletes make leaves underfull). The kernel copies such a
 * block before it empties it (update_ref_for_cow), so the snapshot keeps
 * its references through the old block (FULL_BACKREF) while the source's
 * references stand for the merged copy. Releasing the shared block without
 * that left the old block with no reference from its owner ("owner ref
 * check failed") and its data extents one reference short. After deletes
 * on both sides, deleting the snapshot and cleaning must free everything.
 */
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { mkfs } from '../../src/mkfs/index.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { btrfsCheck } from '../helpers/kernel.js';

const haveProgs = spawnSync('btrfs', ['--version']).status === 0;

async function expectClean(img: string, when: string): Promise<void> {
  const ours = await checkImage(img);
  expect(ours.findings.filter((f) => f.severity === 'error').map(formatFinding), `tsbtrfs check ${when}`).to.deep.equal([]);
  if (haveProgs) {
    const r = await btrfsCheck(img);
    expect(r.ok && r.problems.length === 0, `btrfs check ${when}:\n${r.output}`).to.equal(true);
  }
}

describe('subvol: merges of blocks shared with a snapshot', function () {
  this.timeout(300_000);
  let dir: string;
  before(async () => { dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-merge-')); });
  after(async () => { if (dir) await fsp.rm(dir, { recursive: true, force: true }); });

  for (const [label, size] of [['inline files', 1800], ['files with data extents', 9000]] as const) {
    it(`${label}: deletes merge shared leaves on both sides; snapshot deleted and cleaned; always clean`, async () => {
      const img = path.join(dir, `${size}.img`);
      await mkfs(img, { size: 256 * 1024 * 1024, nodesize: 4096 });
      const fs = await WritableFilesystem.open(img);
      try {
        await fs.createSubvolume('/vol');
        for (let d = 0; d < 4; d++) {
          await fs.mkdir(`/vol/d${d}`);
          for (let i = 0; i < 120; i++) await fs.writeFile(`/vol/d${d}/f${i}`, Buffer.alloc(size, (d * 120 + i) & 0xff));
        }
        await fs.commit();
        await fs.snapshot('/vol', '/snap', { readonly: false });
        // most files go from the source: its leaves empty into their neighbours
        for (let d = 0; d < 4; d++) for (let i = 0; i < 120; i++) if (i % 7 !== 0) await fs.unlink(`/vol/d${d}/f${i}`);
        await fs.commit();
        await expectClean(img, 'after deletes in the source');
        // and from the snapshot, whose blocks the source shared first
        for (let i = 0; i < 120; i++) if (i % 3 !== 0) await fs.unlink(`/snap/d1/f${i}`);
        await fs.commit();
        await expectClean(img, 'after deletes in the snapshot');
        await fs.deleteSubvolume('/snap');
        await fs.syncSubvolumes();
      } finally {
        await fs.close();
      }
      await expectClean(img, 'after the snapshot was deleted and cleaned');
    });
  }
});
