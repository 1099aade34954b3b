/**
 * Native tier: one member of a multi-device filesystem made by mkfs.btrfs
 * and the kernel, opened alone (degraded, read-only) as btrfs check opens
 * it. Each member must check clean with a warning naming the missing
 * device, as btrfs check says; files read back exactly where the present
 * device holds a copy, and a piece held only by a missing device fails
 * with EIO naming it. For the striped profiles the pieces each member can
 * read must together be the whole file, which proves the stripe arithmetic
 * against the kernel's layout. Writing stays refused.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Filesystem } from '../../src/fs/filesystem.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { FileDevice } from '../../src/device/file-device.js';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { BtrfsError } from '../../src/util/errors.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import { iterItems, type TreeItem } from '../../src/tree/search.js';
import { HEADER_SIZE, KEY, OBJ } from '../../src/format/constants.js';
import { checksum } from '../../src/util/checksum.js';
import { rejects } from '../helpers/expect-error.js';
import { OverlayDevice } from '../helpers/overlay-device.js';
import { requireNativeOrSkip, run, runOk } from '../helpers/kernel.js';

const MiB = 1024 * 1024;
const BLOCK = 4096;

interface Made { members: string[]; files: Map<string, Buffer> }

/**
 * `n` sparse member files of `size`, made into one filesystem with
 * mkfs.btrfs `args` and filled through a kernel mount. Loop devices are
 * always detached (and forgotten by the kernel's device scan) afterwards.
 */
async function makeMultiDevice(dir: string, n: number, size: number, args: string[]): Promise<Made> {
  const members: string[] = [];
  const loops: string[] = [];
  const mnt = await fsp.mkdtemp(path.join(dir, 'mnt-'));
  const files = new Map<string, Buffer>([
    ['/small', Buffer.from('inline data, stored in the fs tree\n')],
    ['/dir/medium', randomBytes(200 * 1024 + 17)],
    ['/dir/big', randomBytes(3 * MiB + 123)],
  ]);
  let mounted = false;
  try {
    for (let i = 1; i <= n; i++) {
      const f = path.join(dir, `member${i}.img`);
      await fsp.writeFile(f, Buffer.alloc(0));
      await fsp.truncate(f, size);
      members.push(f);
      loops.push((await runOk('losetup', ['--find', '--show', f])).stdout.trim());
    }
    await runOk('mkfs.btrfs', ['-q', '-f', ...args, ...loops]);
    // device= names the other members, so the mount does not rely on udev having scanned them.
    const devOpts = loops.slice(1).map((l) => `device=${l}`).join(',');
    await runOk('mount', ['-t', 'btrfs', ...(devOpts ? ['-o', devOpts] : []), loops[0]!, mnt]);
    mounted = true;
    await fsp.mkdir(path.join(mnt, 'dir'));
    for (const [p, data] of files) await fsp.writeFile(path.join(mnt, p), data);
    await runOk('sync', []);
  } finally {
    if (mounted) await run('umount', [mnt]);
    for (const l of loops) {
      await run('btrfs', ['device', 'scan', '--forget', l]);
      await run('losetup', ['-d', l]);
    }
    await fsp.rmdir(mnt).catch(() => undefined);
  }
  return { members, files };
}

/** The devid in a member's superblock. */
async function devidOf(member: string): Promise<bigint> {
  const fs = await Filesystem.open(member);
  try {
    return fs.info.sb.dev_item.devid;
  } finally {
    await fs.close();
  }
}

describe('native: degraded open of one member of a multi-device filesystem', function () {
  this.timeout(600_000);
  let work: string;
  before(async function () {
    await requireNativeOrSkip(this);
    work = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-degraded-'));
  });
  after(async () => {
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  describe('RAID1 data and metadata on two devices', () => {
    let made: Made;
    before(async function () {
      await requireNativeOrSkip(this);
      const dir = await fsp.mkdtemp(path.join(work, 'raid1-'));
      made = await makeMultiDevice(dir, 2, 512 * MiB, ['-d', 'raid1', '-m', 'raid1']);
    });

    it('each member alone checks clean, warning that the other is missing, as btrfs check does', async () => {
      for (const [i, member] of made.members.entries()) {
        const other = made.members.length - i;
        const progs = await run('btrfs', ['check', '--readonly', member]);
        expect(progs.code, progs.output).to.equal(0);
        expect(progs.output).to.contain(`warning, device ${other} is missing`);
        const rep = await checkImage(member);
        expect(rep.findings.filter((f) => f.severity === 'error').map(formatFinding), member).to.deep.equal([]);
        expect(rep.findings.map(formatFinding)).to.include(`WARNING: device ${other} is missing`);
        expect(await devidOf(member)).to.equal(BigInt(i + 1));
      }
    });

    it('each member alone reads every file back exactly', async () => {
      for (const member of made.members) {
        const fs = await Filesystem.open(member);
        try {
          expect(fs.info.missingDevices).to.have.length(1);
          expect((await fs.readdir('/')).sort()).to.deep.equal(['dir', 'small']);
          expect((await fs.readdir('/dir')).sort()).to.deep.equal(['big', 'medium']);
          for (const [p, data] of made.files) {
            const got = (await fs.readFile(p)) as Buffer;
            expect(got.equals(data), `${member}:${p}`).to.equal(true);
          }
        } finally {
          await fs.close();
        }
      }
    });

    it('the dev extents of the present device are still verified', async () => {
      const base = await FileDevice.open(made.members[1]!, { readOnly: true });
      try {
        const info = await FsInfo.open(base);
        const own = info.sb.dev_item.devid;
        let hit: TreeItem | undefined;
        for await (const it of iterItems(info.reader, await info.rootOf(OBJ.DEV_TREE))) {
          if (it.key.type === KEY.DEV_EXTENT && it.key.objectid === own) { hit = it; break; }
        }
        expect(hit, 'a dev extent of the present device').to.not.equal(undefined);
        // One sector more than its chunk's stripe, block checksum recomputed: only the cross-check can see it.
        const buf = Buffer.from(hit!.block.buf);
        const at = HEADER_SIZE + hit!.block.items[hit!.slot]!.offset + 24;
        buf.writeBigUInt64LE(buf.readBigUInt64LE(at) + 4096n, at);
        checksum(info.csumType, buf.subarray(32)).copy(buf, 0);
        const dev = new OverlayDevice(base);
        for (const c of info.chunks.map(hit!.block.bytenr, info.nodesize)) if (c.devid === own) dev.patch(Number(c.physical), buf);
        const rep = await checkImage(dev);
        const bad = rep.findings.find((f) => f.code === 'dev-extent-length');
        expect(bad?.message, rep.findings.map(formatFinding).join('\n')).to.contain(`Device extent[${own}, ${hit!.key.offset},`);
      } finally {
        await base.close();
      }
    });

    it('writing a member is refused with ENOTSUP', async () => {
      const member = made.members[0]!;
      const e = await rejects(WritableFilesystem.open(member), 'ENOTSUP', 'filesystem has 2 devices');
      expect(e.path).to.equal(member);
      const dev = await FileDevice.open(member);
      try {
        await rejects(FsWriter.open(dev), 'ENOTSUP', 'single-device');
      } finally {
        await dev.close();
      }
    });
  });

  // Metadata is mirrored onto every device, so each member alone can reach every tree.
  const striped: [name: string, n: number, args: string[], copies: number][] = [
    ['RAID0', 2, ['-d', 'raid0', '-m', 'raid1'], 1],
    ['RAID10', 4, ['-d', 'raid10', '-m', 'raid1c4'], 2],
    ['RAID5', 3, ['-d', 'raid5', '-m', 'raid1c3'], 1],
    ['RAID6', 4, ['-d', 'raid6', '-m', 'raid1c4'], 1],
  ];
  for (const [name, n, args, copies] of striped) {
    it(`${name} data: each member reads the blocks it holds, and together they are the whole file`, async function () {
      const dir = await fsp.mkdtemp(path.join(work, `${name}-`));
      const made = await makeMultiDevice(dir, n, 256 * MiB, args);
      const want = made.files.get('/dir/big')!;
      const readable = new Array<number>(Math.ceil(want.length / BLOCK)).fill(0);
      for (const member of made.members) {
        // progs and we agree on the verdict (we do not read data, so neither does it complain).
        const progs = await run('btrfs', ['check', '--readonly', member]);
        const rep = await checkImage(member);
        expect(rep.errors === 0, `${member}: ${rep.findings.map(formatFinding).join('\n')}\n${progs.output}`).to.equal(progs.code === 0);
        expect(rep.findings.filter((f) => f.code === 'device-missing')).to.have.length(n - 1);
        const fs = await Filesystem.open(member);
        try {
          expect((await fs.readFile('/small', 'utf8'))).to.equal(made.files.get('/small')!.toString());
          for (let b = 0; b < readable.length; b++) {
            try {
              const got = await fs.read('/dir/big', b * BLOCK, BLOCK);
              expect(got.equals(want.subarray(b * BLOCK, (b + 1) * BLOCK)), `${member} block ${b}`).to.equal(true);
              readable[b]!++;
            } catch (e) {
              if (!(e instanceof BtrfsError)) throw e;
              expect(e.code, e.message).to.equal('EIO');
              expect(e.message).to.match(/stored only on devices? [\d, ]+, which (is|are) missing/);
            }
          }
        } finally {
          await fs.close();
        }
      }
      expect(readable.every((c) => c === copies), `copies per block: ${readable.join(',')}`).to.equal(true);
    });
  }
});
