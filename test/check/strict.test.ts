/**
 * Strict mode catches a broken write: the write engine makes an image and
 * expectClean (test/helpers/strict.ts) accepts it; then one transaction
 * commits a deliberate mistake through the same engine — an inode whose
 * nlink does not match its names, a data extent whose backref was dropped
 * while a file still points at it — and expectClean must refuse the image,
 * with our own check (which runs first) naming the mistake.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileDevice } from '../../src/device/file-device.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { mkfs } from '../../src/mkfs/index.js';
import { FILE_EXTENT, KEY, OBJ, S_IFMT, S_IFREG } from '../../src/format/constants.js';
import { key } from '../../src/format/key.js';
import { expectClean, ourErrors } from '../helpers/strict.js';

/** A file the engine writes as one regular (not inline) data extent. */
const DATA = Buffer.alloc(96 * 1024, 0);
for (let i = 0; i < DATA.length; i++) DATA[i] = (i * 7919 + (i >> 11)) & 0xff;

async function makeImage(dir: string, name: string): Promise<string> {
  const img = path.join(dir, name);
  await mkfs(img, { size: 256 << 20 });
  const w = await WritableFilesystem.open(img);
  await w.mkdir('/d');
  await w.writeFile('/d/file', DATA);
  await w.writeFile('/small', 'hello\n');
  await w.close();
  return img;
}

/** Runs `fn` in one transaction of the write engine and commits it. */
async function brokenWrite(img: string, fn: (t: ReturnType<FsWriter['transaction']>) => Promise<void>): Promise<void> {
  const dev = await FileDevice.open(img, {});
  const w = await FsWriter.open(dev);
  try {
    await fn(w.transaction());
    await w.commit();
  } finally {
    await w.close();
  }
}

/** expectClean must reject the image, and our check (which it runs first) must be what rejects it, naming the mistake. */
async function expectStrictFailure(img: string, finding: RegExp): Promise<void> {
  const errors = await ourErrors(img);
  expect(errors.some((l) => finding.test(l)), `${finding} among:\n${errors.join('\n')}`).to.equal(true);
  let err: Error | undefined;
  try {
    await expectClean(img);
  } catch (e) {
    err = e as Error;
  }
  expect(err, 'expectClean accepted a broken image').to.not.equal(undefined);
  expect(err!.message).to.match(/^tsbtrfs check/);
}

describe('check: strict mode catches broken writes', function () {
  this.timeout(120_000);
  let dir = '';

  before(function () {
    if (spawnSync('btrfs', ['--version']).status !== 0) this.skip();
    dir = mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-strict-'));
  });
  after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

  it('accepts what the engine writes', async () => {
    await expectClean(await makeImage(dir, 'ok.img'));
  });

  it('refuses a wrong nlink', async () => {
    const img = await makeImage(dir, 'nlink.img');
    await brokenWrite(img, async (t) => {
      for await (const it of t.iter(OBJ.FS_TREE, key(257n, KEY.INODE_ITEM, 0n), key(OBJ.LAST_FREE, KEY.INODE_ITEM, 0n))) {
        if (it.key.type !== KEY.INODE_ITEM || (it.data.readUInt32LE(52) & S_IFMT) !== S_IFREG) continue;
        const d = Buffer.from(it.data);
        d.writeUInt32LE(d.readUInt32LE(40) + 1, 40);
        await t.update(OBJ.FS_TREE, it.key, d);
        return;
      }
      throw new Error('no regular file');
    });
    await expectStrictFailure(img, /link count wrong, nlink 2 but found 1 name/);
  });

  it('refuses a data extent whose backref was dropped', async () => {
    const img = await makeImage(dir, 'backref.img');
    await brokenWrite(img, async (t) => {
      for await (const it of t.iter(OBJ.FS_TREE)) {
        if (it.key.type !== KEY.EXTENT_DATA || it.data[20] !== FILE_EXTENT.REG) continue;
        const bytenr = it.data.readBigUInt64LE(21);
        if (bytenr === 0n) continue;
        // The file extent item stays; only the extent tree forgets it (and frees the extent at commit).
        t.dropDataRef({ bytenr, numBytes: it.data.readBigUInt64LE(29), root: OBJ.FS_TREE, ino: it.key.objectid, offset: it.key.offset - it.data.readBigUInt64LE(37) });
        return;
      }
      throw new Error('no regular file extent');
    });
    await expectStrictFailure(img, /ref mismatch on \[\d+ \d+\] extent item 0, found 1/);
  });
});
