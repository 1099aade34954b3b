/**
 * mkfs against the referees: every image it makes must pass `btrfs check`
 * (its output read, not only its exit code), open in our reader, pass our own
 * check, and mount in the kernel, which must be able to write to it and leave
 * it clean. Also: options are validated before anything is written, an
 * existing filesystem is not overwritten without force, and the CLI.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Filesystem } from '../../src/fs/filesystem.js';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { MemoryDevice } from '../../src/device/memory-device.js';
import { FileDevice } from '../../src/device/file-device.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import { MAGIC } from '../../src/format/constants.js';
import { mkfs, type MkfsOptions } from '../../src/mkfs/index.js';
import { rejects } from '../helpers/expect-error.js';
import { builtPath } from '../helpers/fixtures.js';
import {
  activeMounts, btrfsCheck, dumpSuper, dumpTree, requireNativeOrSkip, run, runOk, withMount, mkfs as progsMkfs,
} from '../helpers/kernel.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const NOW = { sec: 1_700_000_000n, nsec: 123_456_789 };
const NOW_NS = NOW.sec * 1_000_000_000n + BigInt(NOW.nsec);

/** A copy of a memory device's contents: Filesystem.close closes the device it was given. */
function copyOf(dev: MemoryDevice): MemoryDevice {
  return MemoryDevice.fromBuffer(dev.snapshot());
}

/** The label as dump-super prints it: bytes outside printable ASCII as dots. */
function printedLabel(label: string): string {
  return [...Buffer.from(label)].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
}

async function ourCheck(image: string | MemoryDevice): Promise<string[]> {
  const r = await checkImage(typeof image === 'string' ? image : copyOf(image));
  return r.findings.map(formatFinding);
}

async function expectEmptyRoot(image: string | MemoryDevice): Promise<void> {
  const fs = await Filesystem.open(typeof image === 'string' ? image : copyOf(image));
  try {
    expect(await fs.readdir('/')).to.deep.equal([]);
    const st = await fs.stat('/');
    expect(st.mode).to.equal(0o040755);
    expect(st.nlink).to.equal(1);
    expect(st.ino).to.equal(256);
  } finally {
    await fs.close();
  }
}

describe('mkfs', function () {
  this.timeout(600_000);
  let dir: string;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-mkfs-'));
  });
  after(async () => {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  describe('on a memory device', () => {
    const cases: MkfsOptions[] = [
      {},
      { nodesize: 4096, csum: 'xxhash', label: 'four-k' },
      { nodesize: 65536, csum: 'sha256', metadataProfile: 'single' },
      { csum: 'blake2', label: 'ünïcødé ✓' },
    ];
    for (const opts of cases) {
      it(`opens in our reader and passes our check: ${JSON.stringify(opts)}`, async () => {
        const dev = new MemoryDevice(128 * MiB);
        const r = await mkfs(dev, { ...opts, now: NOW });
        expect(r.totalBytes).to.equal(128 * MiB);
        expect(r.nodesize).to.equal(opts.nodesize ?? 16384);
        expect(r.bytesUsed).to.equal(9 * r.nodesize);
        expect(r.label).to.equal(opts.label ?? '');
        await expectEmptyRoot(dev);
        expect(await ourCheck(dev)).to.deep.equal([]);
        const info = await FsInfo.open(copyOf(dev));
        expect(info.sb.generation).to.equal(1n);
        expect(info.sb.label.subarray(0, Buffer.byteLength(r.label)).toString('utf8')).to.equal(r.label);
        const fs = await Filesystem.open(copyOf(dev));
        try {
          const st = await fs.stat('/');
          expect([st.atimeNs, st.mtimeNs, st.ctimeNs, st.birthtimeNs]).to.deep.equal([NOW_NS, NOW_NS, NOW_NS, NOW_NS]);
        } finally {
          await fs.close();
        }
      });
    }

    it('is reproducible: the same options, uuids and time give the same bytes', async () => {
      const opts: MkfsOptions = {
        now: NOW, fsUuid: '11111111-2222-3333-4444-555555555555', devUuid: Buffer.alloc(16, 7),
        chunkTreeUuid: '01234567-89ab-cdef-0123-456789abcdef', fsTreeUuid: 'fedcba98-7654-3210-fedc-ba9876543210',
      };
      const a = new MemoryDevice(100 * MiB);
      const b = new MemoryDevice(100 * MiB);
      const ra = await mkfs(a, opts);
      await mkfs(b, opts);
      expect(ra.fsid).to.equal('11111111-2222-3333-4444-555555555555');
      expect(ra.devUuid).to.equal('07070707-0707-0707-0707-070707070707');
      expect(a.snapshot().equals(b.snapshot())).to.equal(true);
      const c = new MemoryDevice(100 * MiB);
      const rc = await mkfs(c, { now: NOW });
      expect(rc.fsid).to.not.equal(ra.fsid);
      expect(rc.fsTreeUuid).to.not.equal(rc.fsid);
    });

    it('takes the current time with sub-second digits when not given one', async () => {
      const before = BigInt(Date.now()) * 1_000_000n;
      const dev = new MemoryDevice(100 * MiB);
      await mkfs(dev);
      const after = BigInt(Date.now() + 1) * 1_000_000n;
      const fs = await Filesystem.open(copyOf(dev));
      try {
        const t = (await fs.stat('/')).mtimeNs;
        expect(t >= before && t <= after, `${t} in [${before}, ${after}]`).to.equal(true);
        // a truncated clock would leave the last six digits zero; the odds of that by chance are one in a million
        expect(t % 1_000_000n).to.not.equal(0n);
      } finally {
        await fs.close();
      }
    });

    it('rejects bad options with EINVAL before writing anything', async () => {
      const dev = new MemoryDevice(128 * MiB);
      await rejects(mkfs(new MemoryDevice(88 * MiB)), 'EINVAL', 'too small');
      await rejects(mkfs(new MemoryDevice(88 * MiB)), 'EINVAL', 'mixed');
      await rejects(mkfs(new MemoryDevice(20 * MiB), { metadataProfile: 'single' }), 'EINVAL', 'too small');
      for (const nodesize of [2048, 3000, 8192 + 1, 131072]) await rejects(mkfs(dev, { nodesize }), 'EINVAL', 'nodesize');
      await rejects(mkfs(dev, { sectorsize: 8192 }), 'EINVAL', 'sectorsize');
      await rejects(mkfs(dev, { label: 'x'.repeat(256) }), 'EINVAL', 'label');
      await rejects(mkfs(dev, { label: 'é'.repeat(128) }), 'EINVAL', 'label'); // 256 bytes of UTF-8
      await rejects(mkfs(dev, { label: 'a\0b' }), 'EINVAL', 'NUL');
      await rejects(mkfs(dev, { csum: 'md5' as never }), 'EINVAL', 'checksum');
      await rejects(mkfs(dev, { metadataProfile: 'raid1' as never }), 'EINVAL', 'profile');
      await rejects(mkfs(dev, { fsUuid: 'not-a-uuid' }), 'EINVAL', 'uuid');
      await rejects(mkfs(dev, { devUuid: Buffer.alloc(15) }), 'EINVAL', 'uuid');
      await rejects(mkfs(dev, { fsUuid: Buffer.alloc(16) }), 'EINVAL', 'nil');
      await rejects(mkfs(dev, { now: { sec: 1n, nsec: 1e9 } }), 'EINVAL', 'nsec');
      await rejects(mkfs(dev, { size: 256 * MiB }), 'EINVAL', 'larger than the device');
      await rejects(mkfs(dev, { size: -1 }), 'EINVAL', 'size');
      expect(dev.snapshot().some((x) => x !== 0)).to.equal(false);
      // a label of exactly 255 bytes fits
      const r = await mkfs(dev, { label: 'y'.repeat(255) });
      expect(r.label).to.have.length(255);
    });

    it('refuses a device holding a filesystem or partition table unless forced', async () => {
      const dev = new MemoryDevice(100 * MiB);
      await mkfs(dev);
      const e = await rejects(mkfs(dev), 'EEXIST', 'appears to contain an existing filesystem (btrfs)');
      expect(e.path).to.equal('memory');
      const r = await mkfs(dev, { force: true, label: 'again' });
      expect((await FsInfo.open(copyOf(dev))).sb.fsid.toString('hex')).to.equal(r.fsid.replace(/-/g, ''));

      const ext = new MemoryDevice(100 * MiB);
      await ext.write(1080, Buffer.from([0x53, 0xef]));
      await rejects(mkfs(ext), 'EEXIST', 'ext2/ext3/ext4');
      const mbr = new MemoryDevice(100 * MiB);
      await mbr.write(510, Buffer.from([0x55, 0xaa]));
      await rejects(mkfs(mbr), 'EEXIST', 'partition table');
      // only the mirror survives (the primary was wiped): still a btrfs
      const mirror = new MemoryDevice(100 * MiB);
      await mirror.write(64 * MiB + 64, MAGIC);
      await rejects(mkfs(mirror), 'EEXIST', 'btrfs');
      await mkfs(mbr, { force: true });
      expect((await mbr.read(510, 2)).equals(Buffer.alloc(2))).to.equal(true);
    });

    it('leaves the device open when given one, and flushed', async () => {
      const dev = new MemoryDevice(100 * MiB);
      await mkfs(dev);
      expect((await dev.read(65536 + 64, 8)).equals(MAGIC)).to.equal(true);
      await dev.close();
    });
  });

  describe('on image files', () => {
    it('creates a missing image, grows a shorter one, keeps a longer one and uses the size asked for', async () => {
      const img = path.join(dir, 'files.img');
      await rejects(mkfs(img), 'EINVAL', 'give a size');
      expect(await fsp.stat(img).then(() => true, () => false)).to.equal(false);
      await rejects(mkfs(img, { size: 50 * MiB }), 'EINVAL', 'too small');
      expect(await fsp.stat(img).then(() => true, () => false), 'nothing created for a bad size').to.equal(false);

      let r = await mkfs(img, { size: 100 * MiB + 1000 });
      expect(r.totalBytes).to.equal(100 * MiB); // whole sectors only
      expect((await fsp.stat(img)).size).to.equal(100 * MiB + 1000);
      r = await mkfs(img, { size: 200 * MiB, force: true });
      expect((await fsp.stat(img)).size).to.equal(200 * MiB);
      expect(r.totalBytes).to.equal(200 * MiB);
      r = await mkfs(img, { size: 150 * MiB, force: true });
      expect((await fsp.stat(img)).size).to.equal(200 * MiB);
      expect(r.totalBytes).to.equal(150 * MiB);
      r = await mkfs(img, { force: true });
      expect(r.totalBytes).to.equal(200 * MiB);
      expect(await ourCheck(img)).to.deep.equal([]);
    });

    it('wipes a stale btrfs superblock mirror beyond the new filesystem', async () => {
      const img = path.join(dir, 'stale.img');
      const big = 256 * GiB + 16 * MiB;
      const r1 = await mkfs(img, { size: big });
      expect(r1.superblockCopies).to.deep.equal([65536, 64 * MiB, 256 * GiB]);
      const dev = await FileDevice.open(img, { readOnly: true });
      expect((await dev.read(256 * GiB + 64, 8)).equals(MAGIC)).to.equal(true);
      await dev.close();
      const r2 = await mkfs(img, { size: GiB, force: true });
      expect(r2.superblockCopies).to.deep.equal([65536, 64 * MiB]);
      const dev2 = await FileDevice.open(img, { readOnly: true });
      try {
        expect((await dev2.read(256 * GiB, 4096)).equals(Buffer.alloc(4096))).to.equal(true);
      } finally {
        await dev2.close();
      }
    });
  });

  describe('native: btrfs check and the kernel', function () {
    before(async function () {
      await requireNativeOrSkip(this);
    });

    interface Case { name: string; size: number; opts: MkfsOptions }
    const cases: Case[] = [
      { name: 'the minimum for DUP, defaults', size: 89 * MiB, opts: {} },
      { name: '128M with a label', size: 128 * MiB, opts: { label: 'small one' } },
      { name: '512M, 4K nodes, xxhash', size: 512 * MiB, opts: { nodesize: 4096, csum: 'xxhash', label: 'xx' } },
      { name: '1G, 64K nodes, sha256, single metadata', size: GiB, opts: { nodesize: 65536, csum: 'sha256', metadataProfile: 'single', label: 'sha' } },
      { name: '10G, blake2, unicode label', size: 10 * GiB, opts: { csum: 'blake2', label: 'ünïcødé ✓' } },
      { name: 'the minimum for single metadata', size: 21 * MiB, opts: { metadataProfile: 'single', nodesize: 4096 } },
      { name: '300G: three superblock copies', size: 300 * GiB, opts: { label: 'big' } },
    ];
    const csumName: Record<string, string> = { crc32c: 'crc32c', xxhash: 'xxhash64', sha256: 'sha256', blake2: 'blake2' };

    for (const c of cases) {
      it(c.name, async () => {
        const img = path.join(dir, 'native.img');
        await fsp.rm(img, { force: true });
        try {
          const r = await mkfs(img, { ...c.opts, size: c.size, now: NOW });

          for (const mode of ['original', 'lowmem']) {
            const chk = await btrfsCheck(img, [`--mode=${mode}`]);
            expect(chk.ok, `${mode}: ${chk.output}`).to.equal(true);
          }
          expect(await ourCheck(img)).to.deep.equal([]);
          await expectEmptyRoot(img);

          const sup = await dumpSuper(img, ['-f']);
          expect(sup).to.match(new RegExp(`^label\\s+${printedLabel(c.opts.label ?? '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
          expect(sup).to.match(/^incompat_flags\s+0x341\n\s+\( MIXED_BACKREF \|\n\s+EXTENDED_IREF \|\n\s+SKINNY_METADATA \|\n\s+NO_HOLES \)/m);
          expect(sup).to.match(/^compat_ro_flags\s+0x3\n\s+\( FREE_SPACE_TREE \|\n\s+FREE_SPACE_TREE_VALID \)/m);
          expect(sup).to.match(new RegExp(`^csum_type\\s+\\d \\(${csumName[c.opts.csum ?? 'crc32c']}\\)$`, 'm'));
          expect(sup).to.match(new RegExp(`^nodesize\\s+${c.opts.nodesize ?? 16384}$`, 'm'));
          expect(sup).to.match(new RegExp(`^total_bytes\\s+${c.size}$`, 'm'));
          expect(sup).to.match(new RegExp(`^fsid\\s+${r.fsid}$`, 'm'));
          expect(sup).to.match(/csum\s+0x[0-9a-f]+ \[match\]/);
          for (const [i, off] of r.superblockCopies.entries()) {
            expect(await dumpSuper(img, ['-s', String(i)]), `copy ${i}`).to.match(new RegExp(`bytenr\\s+${off}\\n[\\s\\S]*\\[match\\]`));
          }
          expect(r.superblockCopies).to.have.length(c.size > 256 * GiB ? 3 : c.size > 64 * MiB ? 2 : 1);

          // on the larger images, enough data and files that the kernel must add
          // a data chunk and grow the metadata trees past one leaf
          const big = c.size >= 512 * MiB;
          const data = randomBytes((big ? 40 : 3) * MiB + 123);
          await withMount(img, {}, async (mnt) => {
            const st = await fsp.stat(mnt, { bigint: true });
            expect(st.mtimeNs, 'root mtime as the kernel shows it').to.equal(NOW_NS);
            expect(st.ctimeNs).to.equal(NOW_NS);
            expect(st.birthtimeNs).to.equal(NOW_NS);
            expect(Number(st.mode)).to.equal(0o040755);
            await fsp.writeFile(path.join(mnt, 'hello.txt'), 'hello from the kernel\n');
            await fsp.mkdir(path.join(mnt, 'sub'));
            await fsp.writeFile(path.join(mnt, 'sub', 'data.bin'), data);
            if (big) {
              await fsp.mkdir(path.join(mnt, 'many'));
              for (let i = 0; i < 1500; i++) await fsp.writeFile(path.join(mnt, 'many', `f${i}`), `file ${i}\n`);
            }
            const sv = await run('btrfs', ['subvolume', 'create', path.join(mnt, 'sv')]);
            expect(sv.code, sv.output).to.equal(0);
            const show = await run('btrfs', ['subvolume', 'show', mnt]);
            expect(show.stdout).to.match(new RegExp(`UUID:\\s+${r.fsTreeUuid}`));
          });

          for (const mode of ['original', 'lowmem']) {
            const chk = await btrfsCheck(img, [`--mode=${mode}`]);
            expect(chk.ok, `after the kernel wrote, ${mode}: ${chk.output}`).to.equal(true);
          }
          expect(await ourCheck(img)).to.deep.equal([]);
          const fs = await Filesystem.open(img);
          try {
            expect((await fs.readdir('/')).sort()).to.deep.equal(big ? ['hello.txt', 'many', 'sub', 'sv'] : ['hello.txt', 'sub', 'sv']);
            if (big) expect(await fs.readdir('/many')).to.have.length(1500);
            expect(await fs.readFile('/hello.txt', 'utf8')).to.equal('hello from the kernel\n');
            expect((await fs.readFile('/sub/data.bin') as Buffer).equals(data)).to.equal(true);
          } finally {
            await fs.close();
          }
        } finally {
          await fsp.rm(img, { force: true });
        }
      });
    }

    it('writes to a host block device, keeping its size; refuses a mounted one with EBUSY', async () => {
      const img = path.join(dir, 'loop.img');
      await fsp.writeFile(img, '');
      await fsp.truncate(img, 256 * MiB);
      let loop: string | undefined;
      try {
        loop = (await runOk('losetup', ['--find', '--show', img])).stdout.trim();
        await rejects(mkfs(loop, { size: 512 * MiB }), 'EINVAL', 'larger than the device');
        const r = await mkfs(loop, { label: 'blockdev', now: NOW });
        expect(r.totalBytes).to.equal(256 * MiB);
        expect(r.device).to.equal(loop);
        await rejects(mkfs(loop), 'EEXIST', 'btrfs');
        await runOk('losetup', ['-d', loop]);
        loop = undefined;
        expect((await fsp.stat(img)).size).to.equal(256 * MiB);
        const chk = await btrfsCheck(img);
        expect(chk.ok, chk.output).to.equal(true);
        await withMount(img, {}, async (mnt) => {
          const dev = activeMounts.get(mnt)!;
          await rejects(mkfs(dev, { force: true }), 'EBUSY');
          expect((await fsp.stat(mnt, { bigint: true })).mtimeNs).to.equal(NOW_NS);
        });
      } finally {
        if (loop) await run('losetup', ['-d', loop]);
        await fsp.rm(img, { force: true });
      }
    });

    it('picks the chunk sizes mkfs.btrfs picks for 128M, 512M, 2G and 20G', async () => {
      const chunks = (dump: string) => [...dump.matchAll(/length (\d+) owner \d+ stripe_len \d+ type (\w+)\|(\w+)/g)]
        .map((m) => `${m[2]}|${m[3]} ${m[1]}`).sort();
      for (const size of [128 * MiB, 512 * MiB, 2 * GiB, 20 * GiB]) {
        const theirs = path.join(dir, 'progs.img');
        const ours = path.join(dir, 'ours.img');
        try {
          await progsMkfs(theirs, size);
          await mkfs(ours, { size });
          expect(chunks(await dumpTree(ours, ['-t', 'chunk'])), `${size / MiB} MiB`).to.deep.equal(chunks(await dumpTree(theirs, ['-t', 'chunk'])));
        } finally {
          await fsp.rm(theirs, { force: true });
          await fsp.rm(ours, { force: true });
        }
      }
    });

    it('the free space tree lists exactly the free ranges of each block group, as extents', async () => {
      const img = path.join(dir, 'fst.img');
      try {
        const r = await mkfs(img, { size: 512 * MiB });
        const fst = await dumpTree(img, ['-t', '10']);
        const infos = [...fst.matchAll(/key \((\d+) FREE_SPACE_INFO (\d+)\)[^\n]*\n\s+free space info extent count (\d+)/g)];
        expect(infos.map((m) => [Number(m[1]), Number(m[2])])).to.deep.equal(r.blockGroups.map((g) => [g.logical, g.length]).sort((a, b) => a[0]! - b[0]!));
        const extents = [...fst.matchAll(/key \((\d+) FREE_SPACE_EXTENT (\d+)\)/g)].map((m) => [Number(m[1]), Number(m[2])] as const);
        const free = extents.reduce((n, [, len]) => n + len, 0);
        const total = r.blockGroups.reduce((n, g) => n + g.length, 0);
        expect(free).to.equal(total - r.bytesUsed);
        expect(fst).to.not.match(/FREE_SPACE_BITMAP/);
      } finally {
        await fsp.rm(img, { force: true });
      }
    });
  });

  describe('cli', () => {
    const CLI = builtPath('src/cli/main.js');
    const tsbtrfs = (args: string[]) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [CLI, ...args]);
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      p.on('error', reject);
      p.on('close', (code) => resolve({ code, stdout, stderr }));
    });

    it('makes an image, prints a summary like mkfs.btrfs, refuses to overwrite without -f', async () => {
      const img = path.join(dir, 'cli.img');
      try {
        const r = await tsbtrfs(['mkfs', img, '-s', '1G', '-L', 'from cli', '-n', '4096', '--csum', 'xxhash', '-U', '0badc0de-0000-4000-8000-000000000001']);
        expect(r.code, r.stderr).to.equal(0);
        expect(r.stdout).to.match(/^Label:\s+from cli$/m);
        expect(r.stdout).to.match(/^UUID:\s+0badc0de-0000-4000-8000-000000000001$/m);
        expect(r.stdout).to.match(/^Node size:\s+4096$/m);
        expect(r.stdout).to.match(/^Sector size:\s+4096$/m);
        expect(r.stdout).to.match(/^Filesystem size:\s+1\.00GiB$/m);
        expect(r.stdout).to.match(/^\s+Data:\s+single\s+8\.00MiB$/m);
        expect(r.stdout).to.match(/^\s+Metadata:\s+DUP\s+51\.19MiB$/m);
        expect(r.stdout).to.match(/^\s+System:\s+DUP\s+8\.00MiB$/m);
        expect(r.stdout).to.match(/^Checksum:\s+xxhash64$/m);
        expect((await fsp.stat(img)).size).to.equal(GiB);
        expect(await ourCheck(img)).to.deep.equal([]);

        const again = await tsbtrfs(['mkfs', img]);
        expect(again.code).to.equal(1);
        expect(again.stderr).to.match(/^tsbtrfs: EEXIST: appears to contain an existing filesystem \(btrfs\)/);
        expect(again.stderr.trim().split('\n')).to.have.length(1);

        const forced = await tsbtrfs(['mkfs', '-f', '-m', 'single', img]);
        expect(forced.code, forced.stderr).to.equal(0);
        expect(forced.stdout).to.match(/^Label:\s+\(null\)$/m);
        expect(forced.stdout).to.match(/^\s+Metadata:\s+single\s+8\.00MiB$/m);

        const small = await tsbtrfs(['mkfs', path.join(dir, 'small.img'), '-s', '64M']);
        expect(small.code).to.equal(1);
        expect(small.stderr).to.match(/EINVAL: device too small.*mixed/);
        const badSize = await tsbtrfs(['mkfs', path.join(dir, 'small.img'), '-s', '12Q']);
        expect(badSize.code).to.equal(1);
        const badCsum = await tsbtrfs(['mkfs', img, '--csum', 'md5']);
        expect(badCsum.code).to.equal(2);
        const help = await tsbtrfs(['mkfs', '--help']);
        expect(help.code).to.equal(0);
        expect(help.stdout).to.match(/Usage: tsbtrfs mkfs/);
      } finally {
        await fsp.rm(img, { force: true });
      }
    });
  });
});
