/**
 * The screen (src/check/inode-screen.ts) passes sound fs trees, and only
 * them: every fs tree of every fixture (snapshots and received subvolumes
 * included) is screened, and a tree with one name or link count damaged in
 * any of the ways the name pairing can go wrong is not, so that the check
 * reports exactly what the name-by-name pass reports.
 */
import { expect } from 'chai';
import { FileDevice } from '../../src/device/file-device.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import { iterItems, type TreeItem } from '../../src/tree/search.js';
import { KEY, OBJ, S_IFDIR, S_IFMT, S_IFREG } from '../../src/format/constants.js';
import { decodeRootItem } from '../../src/format/items/root-item.js';
import { isFsTree } from '../../src/check/inodes.js';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { fixturePath, listFixtures } from '../helpers/fixtures.js';
import { withDamagedItem } from '../helpers/damage.js';

/** The fs trees a check looks at: subvolumes not being deleted (refs > 0, no drop in progress). */
async function liveFsTrees(image: string): Promise<number> {
  const dev = await FileDevice.open(image, { readOnly: true });
  try {
    const info = await FsInfo.open(dev);
    let n = 0;
    for await (const it of iterItems(info.reader, info.treeRoot)) {
      if (it.key.type !== KEY.ROOT_ITEM || !isFsTree(it.key.objectid)) continue;
      const item = decodeRootItem(it.data);
      if (item.refs > 0 && item.drop_progress.objectid === 0n) n++;
    }
    return n;
  } finally {
    await dev.close();
  }
}

const FIXTURE = 'filetypes-links-modes-times';

/** Damages one item of the fixture's top-level tree, checks with and without the screen, and returns both reports. */
async function bothWays(pick: (it: TreeItem) => boolean, edit: (data: Buffer) => void) {
  return withDamagedItem(FIXTURE, OBJ.FS_TREE, pick, (_b, d) => edit(d), async (dev) => {
    const screened = await checkImage(dev);
    const exact = await checkImage(dev, { screen: false });
    return { screened, exact };
  });
}

const isType = (it: TreeItem, fmt: number) => it.key.type === KEY.INODE_ITEM && (it.data.readUInt32LE(52) & S_IFMT) === fmt;

describe('check: the fingerprint screen', function () {
  this.timeout(300_000);

  it('passes every fs tree of every fixture', async () => {
    const names = await listFixtures();
    expect(names.length).to.be.greaterThan(10);
    for (const name of names) {
      const img = await fixturePath(name);
      const r = await checkImage(img);
      expect(r.findings.map(formatFinding), name).to.deep.equal([]);
      expect(r.stats.screenedTrees, `${name}: fs trees screened`).to.equal(await liveFsTrees(img));
      const exact = await checkImage(img, { screen: false });
      expect(exact.stats.screenedTrees).to.equal(0);
      expect(exact.stats.inodes, `${name}: inodes counted`).to.equal(r.stats.inodes);
    }
  });

  const cases: [string, (it: TreeItem) => boolean, (d: Buffer) => void][] = [
    ['one link too many', (it) => isType(it, S_IFREG), (d) => d.writeUInt32LE(d.readUInt32LE(40) + 1, 40)],
    ['a hard-linked file with a link too few', (it) => isType(it, S_IFREG) && it.data.readUInt32LE(40) > 1, (d) => d.writeUInt32LE(d.readUInt32LE(40) - 1, 40)],
    ['a DIR_INDEX name that differs from the inode ref', (it) => it.key.type === KEY.DIR_INDEX, (d) => { d[30] = d[30]! ^ 0x01; }],
    ['an INODE_REF name that differs from the entries', (it) => it.key.type === KEY.INODE_REF && it.key.objectid > 256n, (d) => { d[10] = d[10]! ^ 0x20; }],
    ['an INODE_REF index that differs from the DIR_INDEX', (it) => it.key.type === KEY.INODE_REF && it.key.objectid > 256n, (d) => d.writeBigUInt64LE(d.readBigUInt64LE(0) + 1000n, 0)],
    ['a DIR_ITEM file type that differs from the inode', (it) => it.key.type === KEY.DIR_ITEM, (d) => { d[29] = d[29] === 1 ? 7 : 1; }],
    ['a DIR_INDEX file type that differs from the inode', (it) => it.key.type === KEY.DIR_INDEX, (d) => { d[29] = d[29] === 1 ? 7 : 1; }],
    ['a DIR_INDEX naming another inode', (it) => it.key.type === KEY.DIR_INDEX, (d) => d.writeBigUInt64LE(d.readBigUInt64LE(0) + 1n, 0)],
    ['a directory with a wrong isize', (it) => isType(it, S_IFDIR), (d) => d.writeBigUInt64LE(d.readBigUInt64LE(16) + 2n, 16)],
    ['a file with wrong nbytes', (it) => isType(it, S_IFREG) && it.data.readBigUInt64LE(24) > 0n, (d) => d.writeBigUInt64LE(d.readBigUInt64LE(24) + 4096n, 24)],
    ['a file with no link at all', (it) => isType(it, S_IFREG), (d) => d.writeUInt32LE(0, 40)],
    ["the root directory's '..' with another name", (it) => it.key.type === KEY.INODE_REF && it.key.objectid === 256n, (d) => { d[11] = 0x2f; }],
  ];
  for (const [what, pick, edit] of cases) {
    it(`does not pass ${what}, and the check reports what the name-by-name pass does`, async () => {
      const { screened, exact } = await bothWays(pick, edit);
      const lines = screened.findings.map(formatFinding).sort();
      expect(screened.clean, lines.join('\n')).to.equal(false);
      expect(screened.findings.some((f) => f.tree === OBJ.FS_TREE), lines.join('\n')).to.equal(true);
      expect(lines).to.deep.equal(exact.findings.map(formatFinding).sort());
      // The top-level tree went to the exact pass; the data relocation tree is still screened.
      expect(screened.stats.screenedTrees).to.equal(1);
    });
  }
});
