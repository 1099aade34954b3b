/**
 * The seed's guards, seen from the sending side: a send counts itself into
 * every root it reads (snapshot, parent, clone sources) under the root's
 * root_item_lock and refuses roots that are not read-only or are being
 * deleted; whatever way it ends — success, an error, a consumer that goes
 * away mid-stream — every counter is back at zero and the registration
 * other processes see is gone. While it runs, deletion and read-write are
 * refused, in this process and in others.
 */
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { spawn } from 'node:child_process';
import { requireNativeOrSkip, run } from '../helpers/kernel.js';
import { builtPath } from '../helpers/fixtures.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { FileDevice } from '../../src/device/file-device.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { RootLocks } from '../../src/subvol/root-lock.js';
import { deleteSubvolume, setReadOnly, SEND_KIND, type SubvolContext } from '../../src/subvol/manage.js';
import { liveRegistrations } from '../../src/device/image-registry.js';
import { isBtrfsError } from '../../src/util/errors.js';
import { send } from '../../src/send/index.js';
import { Mounted, mkfs, runOk, tempDir, subvolIds, kernelDump, MiB } from './send-kit.js';
import { errOf } from '../helpers/expect-error.js';

const NOW = { sec: 1_800_000_000n, nsec: 0 };

/** Swallows everything, slowly if asked (so a send is still running while the test looks at it). */
function sink(opts: { delayMs?: number; failAfter?: number; closeAfter?: number } = {}): Writable & { received: number } {
  let received = 0;
  const w = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      received += chunk.length;
      (w as unknown as { received: number }).received = received;
      if (opts.failAfter !== undefined && received > opts.failAfter) return cb(new Error('consumer failed on purpose'));
      if (opts.closeAfter !== undefined && received > opts.closeAfter) {
        cb();
        w.destroy();
        return;
      }
      if (opts.delayMs) setTimeout(cb, opts.delayMs);
      else cb();
    },
  }) as Writable & { received: number };
  w.received = 0;
  return w;
}

/** A consumer that takes the first chunk and then holds everything until open() is called. */
function gate(): Writable & { open(): void; started: Promise<void> } {
  let held: (() => void)[] | undefined = [];
  let first: () => void = () => undefined;
  const started = new Promise<void>((r) => { first = r; });
  const w = new Writable({
    highWaterMark: 16 * 1024,
    write(_chunk: Buffer, _enc, cb) {
      first();
      if (held) held.push(() => cb());
      else cb();
    },
  }) as Writable & { open(): void; started: Promise<void> };
  w.open = () => {
    const h = held ?? [];
    held = undefined;
    for (const f of h) f();
  };
  w.started = started;
  return w;
}

describe('send: the guards around roots being sent', function () {
  this.timeout(600_000);
  let dir: string;
  let img: string;
  let ids: Map<string, bigint>;

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await tempDir('tsbtrfs-send-guard-');
    img = path.join(dir, 'a.img');
    await mkfs(img, 256 * MiB);
    const m = await Mounted.open(img, path.join(dir, 'ma'));
    try {
      await runOk('bash', ['-c', `set -e; cd ${m.mnt}; btrfs -q subvolume create vol; cd vol
        head -c 6000000 /dev/urandom > big; mkdir d; for i in $(seq 1 50); do echo $i > d/f$i; done
        cd ..; btrfs -q subvolume snapshot -r vol s0; echo more >> vol/d/f1; btrfs -q subvolume snapshot -r vol s1
        btrfs -q subvolume snapshot -r vol victim`]);
    } finally {
      await m.close();
    }
    ids = await subvolIds(img);
  });
  after(async () => {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  const counters = (locks: RootLocks): Record<string, number> =>
    Object.fromEntries(['vol', 's0', 's1', 'victim'].map((n) => [n, locks.peek(ids.get(n)!)?.peek().sendInProgress ?? 0]));
  const zero = { vol: 0, s0: 0, s1: 0, victim: 0 };

  it('refuses a read-write root (EPERM), a read-write parent (EPERM), a missing root (ENOENT); counts nothing afterwards', async () => {
    const fs = await Filesystem.open(img);
    const locks = new RootLocks();
    try {
      const e1 = await errOf(send(fs, { snapshot: ids.get('vol')!, out: sink(), locks }));
      expect(isBtrfsError(e1, 'EPERM'), String(e1)).to.equal(true);
      const e2 = await errOf(send(fs, { snapshot: ids.get('s1')!, parent: ids.get('vol')!, out: sink(), locks }));
      expect(isBtrfsError(e2, 'EPERM'), String(e2)).to.equal(true);
      const e3 = await errOf(send(fs, { snapshot: ids.get('s1')!, cloneSources: [999n], out: sink(), locks }));
      expect(isBtrfsError(e3, 'ENOENT'), String(e3)).to.equal(true);
      const e4 = await errOf(send(fs, { snapshot: ids.get('s1')!, cloneSources: [ids.get('vol')!], out: sink(), locks }));
      expect(isBtrfsError(e4, 'EPERM'), String(e4)).to.equal(true);
      expect(counters(locks)).to.deep.equal(zero);
      // a root this process is deleting (DEAD in its lock) is refused too
      const dead = locks.get(ids.get('victim')!, 1n);
      dead.critical((s) => { s.flags |= 1n << 48n; });
      const e5 = await errOf(send(fs, { snapshot: ids.get('victim')!, out: sink(), locks }));
      expect(isBtrfsError(e5, 'EPERM'), String(e5)).to.equal(true);
      dead.critical((s) => { s.flags &= ~(1n << 48n); });
      expect(counters(locks)).to.deep.equal(zero);
    } finally {
      await fs.close();
    }
  });

  it('counts each root while the stream runs and nothing after success, after an error, after the consumer leaves', async () => {
    const fs = await Filesystem.open(img);
    const locks = new RootLocks();
    try {
      const g1 = gate();
      const running = send(fs, { snapshot: ids.get('s1')!, parent: ids.get('s0')!, cloneSources: [ids.get('victim')!], out: g1, locks, imagePath: img });
      const g2 = gate();
      const running2 = send(fs, { snapshot: ids.get('s0')!, out: g2, locks, imagePath: img });
      await Promise.all([g1.started, g2.started]);
      expect(counters(locks)).to.deep.equal({ vol: 0, s0: 2, s1: 1, victim: 1 });
      const regs = await liveRegistrations<{ roots: string[] }>(img, SEND_KIND);
      expect(regs.flatMap((r) => r.roots).sort()).to.deep.equal([ids.get('s0'), ids.get('s0'), ids.get('s1'), ids.get('victim')].map(String).sort());
      g1.open();
      g2.open();
      await running;
      await running2;
      expect(counters(locks)).to.deep.equal(zero);
      expect(await liveRegistrations(img, SEND_KIND)).to.deep.equal([]);

      const failing = sink({ failAfter: 200_000 });
      const e1 = await errOf(send(fs, { snapshot: ids.get('s0')!, out: failing, locks, imagePath: img }));
      expect(isBtrfsError(e1, 'EIO'), String(e1)).to.equal(true);
      expect(counters(locks)).to.deep.equal(zero);
      expect(await liveRegistrations(img, SEND_KIND)).to.deep.equal([]);

      const leaving = sink({ closeAfter: 300_000 });
      const e2 = await errOf(send(fs, { snapshot: ids.get('s0')!, out: leaving, locks, imagePath: img }));
      expect(isBtrfsError(e2, 'EIO'), String(e2)).to.equal(true);
      expect(counters(locks)).to.deep.equal(zero);
      expect(await liveRegistrations(img, SEND_KIND)).to.deep.equal([]);
    } finally {
      await fs.close();
    }
  });

  it('while a send runs, this process cannot delete or un-read-only its roots; afterwards it can', async () => {
    const fs = await Filesystem.open(img);
    const locks = new RootLocks();
    const writer = await FsWriter.open(await FileDevice.open(img, {}), { now: () => NOW });
    const ctx: SubvolContext = { writer, locks, imagePath: img, now: () => NOW };
    try {
      // the writer holds the image lock: the send registers under its protection
      const g = gate();
      const running = send(fs, { snapshot: ids.get('victim')!, out: g, locks, imagePath: img });
      await g.started;
      expect(isBtrfsError(await errOf(deleteSubvolume(ctx, ids.get('victim')!)), 'EPERM')).to.equal(true);
      expect(isBtrfsError(await errOf(setReadOnly(ctx, ids.get('victim')!, false)), 'EPERM')).to.equal(true);
      g.open();
      await running;
      expect(counters(locks)).to.deep.equal(zero);
      await deleteSubvolume(ctx, ids.get('victim')!);
    } finally {
      await writer.close();
      await fs.close();
    }
    // a deleted root is not sent
    const fs2 = await Filesystem.open(img);
    try {
      const e = await errOf(send(fs2, { snapshot: ids.get('victim')!, out: sink() }));
      expect(isBtrfsError(e, 'ENOENT'), String(e)).to.equal(true);
    } finally {
      await fs2.close();
    }
  });

  it('another process sees the send: deletion is EPERM while `tsbtrfs send` streams into a slow pipe', async () => {
    const cli = builtPath('src/cli/main.js');
    // `sleep` before reading keeps the sender blocked on a full pipe
    const child = spawn('bash', ['-c', `node ${cli} send ${img} /s0 | (sleep 3; cat > /dev/null)`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    try {
      let seen = false;
      for (let i = 0; i < 100 && !seen; i++) {
        await new Promise((r) => setTimeout(r, 50));
        seen = (await liveRegistrations<{ roots: string[] }>(img, SEND_KIND)).some((r) => r.roots.includes(String(ids.get('s0'))));
      }
      expect(seen, 'the sending process registered').to.equal(true);
      // The CLI at once: the sender registers while it holds the image lock and
      // lets go just after; the command waits that moment out and meets the send.
      const del = await run(process.execPath, [cli, 'subvolume', 'delete', img, '/s0']);
      expect(del.code, del.output).to.equal(1);
      expect(del.output).to.match(/EPERM/);
      const writer = await FsWriter.open(await FileDevice.open(img, { lockWaitMs: 10_000 }), { now: () => NOW });
      try {
        const ctx: SubvolContext = { writer, locks: new RootLocks(), imagePath: img, now: () => NOW };
        expect(isBtrfsError(await errOf(deleteSubvolume(ctx, ids.get('s0')!)), 'EPERM')).to.equal(true);
      } finally {
        await writer.close();
      }
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      expect(code, stderr).to.equal(0);
      expect(await liveRegistrations(img, SEND_KIND)).to.deep.equal([]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('the CLI: -f FILE and stdout give the same bytes, -p resolves paths in the image, --no-data, refuses a terminal', async () => {
    const cli = builtPath('src/cli/main.js');
    const f1 = path.join(dir, 'cli-file.stream');
    await runOk('node', [cli, 'send', img, '/s1', '-p', '/s0', '-f', f1]);
    const r = await runOk('bash', ['-c', `node ${cli} send ${img} /s1 -p /s0 | sha256sum`]);
    const { createHash } = await import('node:crypto');
    expect(r.stdout.split(' ')[0]).to.equal(createHash('sha256').update(await fsp.readFile(f1)).digest('hex'));
    expect(await kernelDump(f1)).to.match(/^snapshot\s+\.\/s1/);
    const f2 = path.join(dir, 'cli-nodata.stream');
    await runOk('node', [cli, 'send', img, '/s1', '--no-data', '--proto', '2', '-f', f2]);
    expect(await kernelDump(f2)).to.match(/update_extent/);
    const bad = await runOk('bash', ['-c', `node ${cli} send ${img} /s0/d -f /dev/null; echo "exit=$?"`]);
    expect(bad.output).to.match(/not a subvolume/);
    expect(bad.output).to.match(/exit=1/);
    // a terminal: `script` gives the command a pseudo-terminal as stdout
    const tty = await runOk('bash', ['-c', `script -qec "node ${cli} send ${img} /s0" /dev/null; echo "exit=$?"`]);
    expect(tty.stdout).to.match(/terminal/);
    expect(tty.stdout).to.match(/exit=1/);
  });
});
