/**
 * dump-tree of every kernel-made fixture equals `btrfs inspect-internal
 * dump-tree` of the same image (stored beside it, made with TZ=UTC), line for
 * line: every tree, every block, every item field.
 */
import { expect } from 'chai';
import { FileDevice } from '../../src/device/file-device.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import { dumpTree } from '../../src/inspect/dump-tree.js';
import { listFixtures, fixturePath, fixtureDumpTree } from '../helpers/fixtures.js';

const fixtures = await listFixtures();

function firstDifference(want: string[], got: string[]): string {
  for (let i = 0; i < Math.max(want.length, got.length); i++) {
    if (want[i] !== got[i]) {
      return `line ${i + 1}:\n  btrfs:   ${JSON.stringify(want[i])}\n  tsbtrfs: ${JSON.stringify(got[i])}\ncontext:\n${want.slice(Math.max(0, i - 5), i + 1).join('\n')}`;
    }
  }
  return '';
}

describe('dump-tree equals btrfs inspect-internal dump-tree on every fixture', function () {
  this.timeout(300_000);
  for (const name of fixtures) {
    it(name, async () => {
      const want = (await fixtureDumpTree(name)).split('\n').filter((l) => !l.startsWith('btrfs-progs v'));
      const dev = await FileDevice.open(await fixturePath(name), { readOnly: true });
      try {
        const info = await FsInfo.open(dev);
        const parts: string[] = [];
        await dumpTree(info, (s) => parts.push(s), { utc: true });
        const got = parts.join('').split('\n');
        while (want.length && want[want.length - 1] === '') want.pop();
        while (got.length && got[got.length - 1] === '') got.pop();
        const diff = firstDifference(want, got);
        expect(diff, diff).to.equal('');
      } finally {
        await dev.close();
      }
    });
  }
});
