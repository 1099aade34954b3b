import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileDevice, readLockHolder } from '../../src/device/index.js';
import { BtrfsError } from '../../src/util/errors.js';
import { rejects } from '../helpers/expect-error.js';


const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');

describe('device/FileDevice', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-fdev-')); });
  afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  it('creates a sparse image of the requested size and reads back writes', async () => {
    const img = path.join(dir, 'a.img');
    const d = await FileDevice.open(img, { create: true, sizeBytes: 64 << 20 });
    expect(d.size).to.equal(64 << 20);
    expect(d.isBlockDevice).to.equal(false);
    expect(d.name).to.equal(img);
    expect(fs.statSync(img).size).to.equal(64 << 20);
    expect(fs.statSync(img).blocks * 512).to.be.lessThan(1 << 20); // sparse
    const data = crypto.randomBytes(300_000);
    await d.write((32 << 20) - 5, data);
    await d.flush();
    expect((await d.read((32 << 20) - 5, data.length)).equals(data)).to.equal(true);
    await d.close();
    const raw = fs.readFileSync(img);
    expect(raw.subarray((32 << 20) - 5, (32 << 20) - 5 + data.length).equals(data)).to.equal(true);
  });

  it('never shrinks an existing image and keeps its contents', async () => {
    const img = path.join(dir, 'b.img');
    fs.writeFileSync(img, Buffer.alloc(8192, 7));
    const d = await FileDevice.open(img, { create: true, sizeBytes: 4096 });
    expect(d.size).to.equal(8192);
    expect((await d.read(8000, 192)).equals(Buffer.alloc(192, 7))).to.equal(true);
    await d.close();
  });

  it('fails past the end (EIO read, ENOSPC write) and on bad arguments (EINVAL)', async () => {
    const img = path.join(dir, 'c.img');
    fs.writeFileSync(img, Buffer.alloc(10000));
    const d = await FileDevice.open(img);
    const e = await rejects(d.read(9990, 11), 'EIO', 'offset 9990');
    expect(e.path).to.equal(img);
    await rejects(d.read(20000, 1), 'EIO', 'offset 20000');
    await rejects(d.write(9999, Buffer.alloc(2)), 'ENOSPC', 'offset 9999');
    await rejects(d.read(-5, 1), 'EINVAL');
    await rejects(d.read(0, 1.5), 'EINVAL');
    expect((await d.read(9990, 10)).length).to.equal(10);
    expect(fs.statSync(img).size).to.equal(10000);
    await d.close();
  });

  it('readSync: the same bytes as read, and the same errors', async () => {
    const img = path.join(dir, 's.img');
    const data = crypto.randomBytes(70_000);
    fs.writeFileSync(img, data);
    const d = await FileDevice.open(img, { readOnly: true });
    expect(d.readSync(12_345, 40_000).equals(data.subarray(12_345, 52_345))).to.equal(true);
    expect(d.readSync(12_345, 40_000).equals(await d.read(12_345, 40_000))).to.equal(true);
    const sync = (f: () => unknown) => { try { f(); } catch (e) { return e as BtrfsError; } return expect.fail('no error'); };
    const e = sync(() => d.readSync(69_990, 11));
    expect(e).to.be.instanceOf(BtrfsError);
    expect(e.code).to.equal('EIO');
    expect(e.path).to.equal(img);
    expect(sync(() => d.readSync(-1, 1)).code).to.equal('EINVAL');
    fs.truncateSync(img, 4096);
    expect(sync(() => d.readSync(4000, 1000)).message).to.match(/short read at offset 4096/);
    await d.close();
    expect(sync(() => d.readSync(0, 1)).code).to.equal('EBADF');
  });

  it('reports a truncated image as EIO instead of returning short data', async () => {
    const img = path.join(dir, 't.img');
    fs.writeFileSync(img, Buffer.alloc(8192, 1));
    const d = await FileDevice.open(img, { readOnly: true });
    fs.truncateSync(img, 4096);
    await rejects(d.read(4000, 1000), 'EIO', 'short read at offset 4096');
    await d.close();
  });

  it('is EBADF after close, for every call', async () => {
    const img = path.join(dir, 'd.img');
    fs.writeFileSync(img, Buffer.alloc(4096));
    const d = await FileDevice.open(img);
    await d.close();
    await rejects(d.read(0, 1), 'EBADF');
    await rejects(d.write(0, Buffer.alloc(1)), 'EBADF');
    await rejects(d.flush(), 'EBADF');
    await rejects(d.close(), 'EBADF');
    // and the lock went with it
    expect(await readLockHolder(img)).to.equal(null);
    expect(fs.existsSync(`${img}.lock`)).to.equal(false);
  });

  it('opens read-only with O_RDONLY: EROFS on write, no lock, no change to bytes or mtime', async () => {
    const img = path.join(dir, 'e.img');
    fs.writeFileSync(img, crypto.randomBytes(65536));
    const old = new Date(Date.UTC(2020, 0, 2, 3, 4, 5));
    fs.utimesSync(img, old, old);
    fs.chmodSync(img, 0o444); // a writable open would now fail for non-root; O_RDONLY never does
    const before = fs.statSync(img, { bigint: true });
    const hash = sha(fs.readFileSync(img));
    const d = await FileDevice.open(img, { readOnly: true });
    expect(d.readOnly).to.equal(true);
    expect(d.lock).to.equal(undefined);
    expect(fs.existsSync(`${img}.lock`)).to.equal(false);
    expect(await readLockHolder(img)).to.equal(null);
    await rejects(d.write(0, Buffer.from('x')), 'EROFS');
    expect((await d.read(0, 65536)).length).to.equal(65536);
    await d.flush();
    await d.close();
    const after = fs.statSync(img, { bigint: true });
    expect(after.mtimeNs).to.equal(before.mtimeNs);
    expect(after.ctimeNs).to.equal(before.ctimeNs);
    expect(after.size).to.equal(before.size);
    expect(sha(fs.readFileSync(img))).to.equal(hash);
    expect(fs.readdirSync(dir)).to.deep.equal(['e.img']);
  });

  it('allows read-only opens while a writer holds the lock', async () => {
    const img = path.join(dir, 'f.img');
    fs.writeFileSync(img, Buffer.alloc(4096));
    const w = await FileDevice.open(img);
    const r = await FileDevice.open(img, { readOnly: true });
    await w.write(0, Buffer.from('seen'));
    expect((await r.read(0, 4)).toString()).to.equal('seen');
    await r.close();
    await w.close();
  });

  it('opens without a lock when asked', async () => {
    const img = path.join(dir, 'g.img');
    fs.writeFileSync(img, Buffer.alloc(4096));
    const a = await FileDevice.open(img, { lock: false });
    expect(a.lock).to.equal(undefined);
    const b = await FileDevice.open(img); // not blocked by the unlocked open
    await b.close();
    await a.close();
  });

  it('rejects what is not a file or block device, and missing files', async () => {
    await rejects(FileDevice.open(dir), 'EINVAL', 'not a regular file or block device');
    await rejects(FileDevice.open('/dev/null', { readOnly: true }), 'EINVAL');
    const e = await rejects(FileDevice.open(path.join(dir, 'missing.img')), 'ENOENT');
    expect(e.path).to.equal(path.join(dir, 'missing.img'));
    await rejects(FileDevice.open(path.join(dir, 'x.img'), { readOnly: true, create: true }), 'EINVAL');
  });

  describe('on a loop device', function () {
    let backing: string;
    let loop: string | undefined;
    let loopDir: string;
    const SIZE = 24 << 20;

    before(function () {
      loopDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-loop-'));
      backing = path.join(loopDir, 'backing.img');
      fs.writeFileSync(backing, '');
      fs.truncateSync(backing, SIZE);
      try {
        loop = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
      } catch (e) {
        const why = `losetup unavailable: ${(e as Error).message.split('\n')[0]}`;
        if (process.env.REQUIRE_NATIVE === '1') throw new Error(`${why} (REQUIRE_NATIVE=1)`);
        console.warn(`\n    !!! SKIPPING loop device tests: ${why}\n`);
        this.skip();
      }
    });

    after(() => {
      if (loop) execFileSync('losetup', ['-d', loop]);
      fs.rmSync(loopDir, { recursive: true, force: true });
    });

    it('is refused by the kernel (O_EXCL) while another program holds the device exclusively', async () => {
      const fd = fs.openSync(loop!, fs.constants.O_RDWR | fs.constants.O_EXCL);
      try {
        await rejects(FileDevice.open(loop!, { lock: false }), 'EBUSY', 'held exclusively');
        // read-only opens do not claim the device
        const ro = await FileDevice.open(loop!, { readOnly: true });
        await ro.close();
        // and a refused open leaves no lock behind
        await rejects(FileDevice.open(loop!), 'EBUSY', 'held exclusively');
        expect(await readLockHolder(loop!)).to.equal(null);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('opens with the right size, reads and writes through to the backing file', async () => {
      const d = await FileDevice.open(loop!);
      expect(d.isBlockDevice).to.equal(true);
      expect(d.size).to.equal(SIZE);
      const data = crypto.randomBytes(8192);
      await d.write(1 << 20, data);
      await d.flush();
      expect((await d.read(1 << 20, 8192)).equals(data)).to.equal(true);
      await rejects(d.read(SIZE - 10, 11), 'EIO', `offset ${SIZE - 10}`);
      await rejects(d.write(SIZE, Buffer.alloc(1)), 'ENOSPC');
      // the lock of a block device lives outside /dev, keyed by its real path
      expect(d.lock!.lockPath.startsWith('/dev')).to.equal(false);
      expect(d.lock!.lockPath).to.contain(encodeURIComponent(fs.realpathSync(loop!)));
      const holder = await readLockHolder(loop!);
      expect(holder?.owner?.pid).to.equal(process.pid);
      await rejects(FileDevice.open(loop!), 'EBUSY', `image in use by pid ${process.pid}`);
      const ro = await FileDevice.open(loop!, { readOnly: true });
      expect(ro.size).to.equal(SIZE);
      await ro.close();
      await d.close();
      expect(await readLockHolder(loop!)).to.equal(null);
      const raw = Buffer.alloc(8192);
      const fd = fs.openSync(backing, 'r');
      fs.readSync(fd, raw, 0, 8192, 1 << 20);
      fs.closeSync(fd);
      expect(raw.equals(data)).to.equal(true);
    });
  });
});
