/**
 * Kernel parity of the seed: the same scenario — a send streaming into a
 * slow pipe while another process deletes the snapshot, makes it
 * read-write, deletes another snapshot, and deletes the first once the send
 * is over — run with the kernel (btrfs send/subvolume/property on a mount)
 * and with tsbtrfs (its CLI on a copy of the same image, in separate
 * processes). The outcomes and errnos must be the same, and afterwards the
 * kernel must list the same subvolumes in our image as we do.
 */
import { expect } from 'chai';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkfs, withMount, requireNativeOrSkip, run, sh, btrfsCheck, subvolumeList } from '../helpers/kernel.js';
import { builtPath } from '../helpers/fixtures.js';
import { liveRegistrations } from '../../src/device/image-registry.js';
import { SEND_KIND } from '../../src/subvol/manage.js';

const MiB = 1024 * 1024;

function outcome(r: { code: number | null; output: string }): string {
  if (r.code === 0) return 'ok';
  return /EPERM|Operation not permitted/.test(r.output) ? 'EPERM' : `fail(${r.output.trim().split('\n').pop()})`;
}

function slowSend(cmd: string): ChildProcess {
  // the consumer reads nothing for a while: the sender blocks on a full pipe, still in its send
  return spawn('sh', ['-c', `${cmd} | (sleep 6; cat > /dev/null)`], { stdio: 'ignore' });
}

function exited(c: ChildProcess): Promise<number | null> {
  return new Promise((r) => (c.exitCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code))));
}

describe('subvolumes: send vs delete, the kernel and tsbtrfs side by side', function () {
  this.timeout(300_000);
  let dir: string;

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-parity-'));
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('delete and ro=false are EPERM during the send, other snapshots can go, the snapshot can go after', async () => {
    const kimg = path.join(dir, 'k.img');
    await mkfs(kimg, 512 * MiB);
    await withMount(kimg, {}, async (mnt) => {
      await sh(`btrfs -q subvolume create ${mnt}/sv && dd if=/dev/urandom of=${mnt}/sv/data bs=1M count=24 status=none && for i in $(seq 1 200); do echo $i > ${mnt}/sv/f$i; done && btrfs -q subvolume snapshot -r ${mnt}/sv ${mnt}/snap && btrfs -q subvolume snapshot -r ${mnt}/sv ${mnt}/snap2 && sync`);
    });
    const oimg = path.join(dir, 'o.img');
    await fs.copyFile(kimg, oimg);

    const kernel: string[] = [];
    await withMount(kimg, {}, async (mnt) => {
      const sender = slowSend(`btrfs send -q ${mnt}/snap`);
      try {
        await new Promise((r) => setTimeout(r, 1500));
        kernel.push(outcome(await run('btrfs', ['subvolume', 'delete', `${mnt}/snap`])));
        kernel.push(outcome(await run('btrfs', ['property', 'set', `${mnt}/snap`, 'ro', 'false'])));
        kernel.push(outcome(await run('btrfs', ['subvolume', 'delete', `${mnt}/snap2`])));
      } finally {
        await exited(sender);
      }
      kernel.push(outcome(await run('btrfs', ['subvolume', 'delete', `${mnt}/snap`])));
    });

    const cli = builtPath('src/cli/main.js');
    const T = (...args: string[]) => run(process.execPath, [cli, ...args]);
    const ours: string[] = [];
    const sender = slowSend(`${process.execPath} ${cli} send ${oimg} /snap`);
    try {
      for (let i = 0; i < 100 && (await liveRegistrations(oimg, SEND_KIND)).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect((await liveRegistrations(oimg, SEND_KIND)).length, 'the send registered').to.equal(1);
      ours.push(outcome(await T('subvolume', 'delete', oimg, '/snap')));
      ours.push(outcome(await T('property', 'set', oimg, '/snap', 'ro', 'false')));
      ours.push(outcome(await T('subvolume', 'delete', oimg, '/snap2')));
    } finally {
      await exited(sender);
    }
    ours.push(outcome(await T('subvolume', 'delete', oimg, '/snap')));

    expect(kernel).to.deep.equal(['EPERM', 'EPERM', 'ok', 'ok']);
    expect(ours).to.deep.equal(kernel);

    const r = await btrfsCheck(oimg);
    expect(r.ok, r.output).to.equal(true);
    const ourList = (await T('subvolume', 'list', oimg)).stdout.trim();
    await withMount(oimg, {}, async (mnt) => {
      const k = await subvolumeList(mnt);
      expect(k.map((s) => `${s.id} ${s.path}`)).to.deep.equal(ourList.split('\n').map((l) => {
        const m = /^ID (\d+) .* path (.*)$/.exec(l)!;
        return `${m[1]} ${m[2]}`;
      }));
    });
  });
});
