/**
 * send against the real thing: images made by the kernel, streams written
 * by our code from the unmounted image, replayed by the real `btrfs
 * receive` into another kernel filesystem, and the received snapshots
 * compared with the originals (contents, modes, owners, ns times, xattrs,
 * hard links, device numbers). Every stream must also pass `btrfs receive
 * --dump`. Incremental streams are set beside the kernel's own `btrfs send
 * -p` of the same change: same order of size, no resending of unchanged data.
 *
 * Seeds: TSBTRFS_SEED=123 (or 1,2,3) reproduces a run; each run prints its seed.
 */
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { requireNativeOrSkip } from '../helpers/kernel.js';
import { seedsFromEnv } from '../native/random-tree.js';
import {
  Mounted, HardChanges, Rng, TreeGenerator, mkfs, runOk, sendToFile, subvolIds, summarize, kernelDump,
  kernelReceive, compareTrees, tempDir, buildChain, run, entries, py, randomTimeNs, MiB, type StreamSummary,
} from './send-kit.js';

function fmtRatio(a: number, b: number): string {
  return b === 0 ? 'n/a' : (a / b).toFixed(3);
}

describe('send: streams replayed by the real btrfs receive', function () {
  this.timeout(3_600_000);
  let dir: string;
  const mounts: Mounted[] = [];

  before(async function () {
    await requireNativeOrSkip(this);
    dir = await tempDir('tsbtrfs-send-');
  });
  afterEach(async () => {
    for (const m of mounts.splice(0)) await m.close();
  });
  after(async () => {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  async function mount(img: string, name: string, ro = false): Promise<Mounted> {
    const m = await Mounted.open(img, path.join(dir, name), ro ? ['ro'] : []);
    mounts.push(m);
    return m;
  }

  it('a random tree: full send + 5 incrementals (protocols 1 and 2) received identical, sizes like the kernel\'s', async () => {
    for (const seed of seedsFromEnv(1)) {
      console.log(`      seed ${seed} (TSBTRFS_SEED=${seed} reproduces)`);
      const rng = new Rng(seed);
      const work = path.join(dir, `chain-${seed}`);
      await fsp.mkdir(work);
      const built = await buildChain(work, rng);
      const ids = await subvolIds(built.img);
      const streams: Record<number, string[]> = { 1: [], 2: [] };
      for (const proto of [1, 2] as const) {
        for (let i = 0; i < built.snaps.length; i++) {
          const file = path.join(work, `ours-v${proto}-${i}.stream`);
          await sendToFile(built.img, file, {
            snapshot: ids.get(built.snaps[i]!)!, parent: i > 0 ? ids.get(built.snaps[i - 1]!) : undefined, proto,
          });
          await kernelDump(file);
          streams[proto]!.push(file);
        }
      }
      // the referee: receive each chain into its own filesystem
      const recv: Record<number, Mounted> = {};
      for (const proto of [1, 2]) {
        const img = path.join(work, `b${proto}.img`);
        await mkfs(img, 1024 * MiB);
        recv[proto] = await mount(img, `mb${proto}-${seed}`);
        for (const f of streams[proto]!) {
          try {
            await kernelReceive(f, recv[proto]!.mnt);
          } catch (e) {
            throw new Error(`seed ${seed}: ${(e as Error).message}\nlog tail:\n${built.log.slice(-30).join('\n')}`);
          }
        }
      }
      const a = await mount(built.img, `ma-ro-${seed}`, true);
      let total = 0;
      for (const s of built.snaps) {
        for (const proto of [1, 2]) {
          const { diffs, entries: n } = await compareTrees(path.join(a.mnt, s), path.join(recv[proto]!.mnt, s));
          expect(diffs, `seed ${seed} ${s} protocol ${proto}:\n${diffs.slice(0, 20).join('\n')}\nlog tail:\n${built.log.slice(-30).join('\n')}`).to.deep.equal([]);
          total += n;
        }
      }
      // the kernel's own streams of the same snapshots
      const rows: string[] = [];
      for (let i = 0; i < built.snaps.length; i++) {
        const k = path.join(work, `kernel-${i}.stream`);
        const snap = path.join(a.mnt, built.snaps[i]!);
        await runOk('btrfs', ['send', '-q', '--proto', '1', ...(i > 0 ? ['-p', path.join(a.mnt, built.snaps[i - 1]!)] : []), '-f', k, snap]);
        const ours: StreamSummary = await summarize(streams[1]![i]!);
        const kern: StreamSummary = await summarize(k);
        rows.push(`${i === 0 ? 'full  ' : `incr ${i}`}: ours ${ours.bytes} B (${ours.commands} cmds, write ${ours.writeBytes}, clone ${ours.cloneBytes})` +
          ` kernel ${kern.bytes} B (${kern.commands} cmds, write ${kern.writeBytes}, clone ${kern.cloneBytes}) ratio ${fmtRatio(ours.bytes, kern.bytes)}`);
        if (i > 0) {
          // nothing unchanged is sent again: our written bytes stay within what the kernel writes or clones
          expect(ours.writeBytes, rows[rows.length - 1]).to.be.at.most(1.25 * (kern.writeBytes + kern.cloneBytes) + 256 * 1024);
        }
      }
      if (process.env.TSBTRFS_SEND_LOG) console.log(built.log.join("\n"));
      console.log(`      ${built.snaps.length} snapshots, ${total} entries compared; stream sizes (protocol 1):\n        ${rows.join('\n        ')}`);
    }
  });

  it('a storm of renames, swaps, cycles and type changes on a small tree (seeded): received identical', async () => {
    for (const seed of seedsFromEnv(1)) {
      console.log(`      seed ${seed} (TSBTRFS_SEED=${seed} reproduces)`);
      const rng = new Rng(seed ^ 0x5a5a5a5a);
      const work = path.join(dir, `storm-${seed}`);
      await fsp.mkdir(work);
      const img = path.join(work, 'a.img');
      await mkfs(img, 256 * MiB);
      const mnt = path.join(work, 'ma');
      const m = await Mounted.open(img, mnt);
      const log: string[] = [];
      const snaps: string[] = [];
      try {
        const vol = path.join(mnt, 'vol');
        await runOk('btrfs', ['subvolume', 'create', vol]);
        const gen = new TreeGenerator(vol, rng, { dataBudget: 4 * MiB });
        await gen.populate(vol, 0, rng.int(10, 16));
        await gen.sync();
        const hard = new HardChanges(vol, rng);
        for (let round = 0; round <= 4; round++) {
          if (round > 0) {
            for (let i = 0; i < 60; i++) {
              const what = await hard.random();
              if (what) log.push(what);
            }
            await gen.retime(0.2);
            await gen.sync();
          }
          await runOk('btrfs', ['subvolume', 'snapshot', '-r', vol, path.join(mnt, `s${round}`)]);
          snaps.push(`s${round}`);
        }
      } finally {
        await m.close();
      }
      const ids = await subvolIds(img);
      const bimg = path.join(work, 'b.img');
      await mkfs(bimg, 256 * MiB);
      const b = await mount(bimg, `storm-b-${seed}`);
      for (const [i, s] of snaps.entries()) {
        const f = path.join(work, `${s}.stream`);
        await sendToFile(img, f, { snapshot: ids.get(s)!, parent: i > 0 ? ids.get(snaps[i - 1]!) : undefined, proto: rng.chance(0.5) ? 1 : 2 });
        await kernelDump(f);
        try {
          await kernelReceive(f, b.mnt);
        } catch (e) {
          throw new Error(`seed ${seed}: ${(e as Error).message}\nlog:\n${log.slice(-40).join('\n')}`);
        }
      }
      const a = await mount(img, `storm-a-${seed}`, true);
      for (const s of snaps) {
        const { diffs } = await compareTrees(path.join(a.mnt, s), path.join(b.mnt, s));
        expect(diffs, `seed ${seed} ${s}:\n${diffs.slice(0, 20).join('\n')}\nlog:\n${log.slice(-40).join('\n')}`).to.deep.equal([]);
      }
    }
  });

  it('hard cases: swaps, cycles, a directory under its former child, reused inode numbers, files <-> directories, links, deleted trees', async () => {
    const work = path.join(dir, 'hard');
    await fsp.mkdir(work);
    const img = path.join(work, 'a.img');
    await mkfs(img, 512 * MiB);
    const mnt = path.join(work, 'ma');
    const script = (body: string): Promise<unknown> => runOk('bash', ['-c', `set -euo pipefail\ncd ${mnt}/vol\n${body}`]);
    let m = await Mounted.open(img, mnt);
    try {
      await runOk('btrfs', ['subvolume', 'create', `${mnt}/vol`]);
      await script(`
        echo A > a; echo B > b
        mkdir -p da/x dbb/y; echo 1 > da/x/f; echo 2 > dbb/y/g
        mkdir -p P/C/E; echo pc > P/C/file; echo pce > P/C/E/ef
        mkdir -p Q/R/S/T; echo t > Q/R/S/T/t
        echo c1 > c1; echo c2 > c2; echo c3 > c3
        mkdir -p cy1 cy2 cy3; touch cy1/in1 cy2/in2 cy3/in3
        echo h > h1; ln h1 h2; echo k > k1; mkdir links; ln h1 links/h3
        echo rep > repl
        mkdir -p deld/sub/subsub; echo z > deld/sub/subsub/z; echo y > deld/y; ln -s foo deld/sl; mkfifo deld/fifo
        head -c 1000000 /dev/urandom > big
        truncate -s 3M sparse; dd if=/dev/urandom of=sparse bs=4096 seek=100 count=3 conv=notrunc status=none
        mkdir todir; echo q > todir/q
        mkdir -p same/name; echo old > same/name/file
        mkdir ext; echo origin > ext/origin
        for i in $(seq 1 120); do ln ext/origin "ext/link-$i-$(printf 'L%.0s' $(seq 1 180))"; done   # INODE_EXTREFs
        for n in $(seq 256 330); do for g in $(seq 5 9); do : > "o$n-$g-0"; done; done             # names orphans would take
        echo last > zzlast
      `);
      await runOk('btrfs', ['subvolume', 'snapshot', '-r', `${mnt}/vol`, `${mnt}/s0`]);
      // the highest inode number freed: after a remount the kernel hands it out again, with a new generation
      await script('rm zzlast');
      const before = (await fsp.lstat(`${mnt}/s0/zzlast`, { bigint: true })).ino;
      await m.close();
      m = await Mounted.open(img, mnt);
      await script('mkdir zzlast; echo new > zzlast/inside');
      const after = (await fsp.lstat(`${mnt}/vol/zzlast`, { bigint: true })).ino;
      expect(after, 'the kernel reused the inode number').to.equal(before);
      await script(`
        mv a tmp; mv b a; mv tmp b                                   # swap files
        mv da tmpd; mv dbb da; mv tmpd dbb                           # swap directories
        mv P/C Ct; mv P Ct/P; mv Ct P                                 # P under its former child C
        mv Q/R/S/T Tt; mv Q Tt/Q; mv Tt Q                             # Q under its former grandchild T
        mv c1 t; mv c3 c1; mv c2 c3; mv t c2                          # a cycle of files
        mv cy1 t; mv cy3 cy1; mv cy2 cy3; mv t cy2                    # a cycle of directories
        mv cy2 cy1/; mv cy3 cy1/cy2/                                  # and nested
        rm h1; ln k1 k2; ln k1 da/k3; rm links/h3; ln h2 links/h4     # links removed and added
        rm repl; mkdir repl; echo inrepl > repl/r                     # a file replaced by a directory
        rm -rf todir; echo nowfile > todir                            # a directory replaced by a file
        rm -rf deld                                                   # a deleted tree
        dd if=/dev/urandom of=big bs=4096 seek=10 count=2 conv=notrunc status=none
        fallocate -p -o 409600 -l 8192 sparse; truncate -s 5M sparse
        cp --reflink=always big bigcopy
        mv same/name same/name2; mkdir same/name; mv same/name2/file same/name/file
        for i in $(seq 1 40); do rm "ext/link-$i-$(printf 'L%.0s' $(seq 1 180))"; done
        for i in $(seq 1 30); do ln ext/origin "da/x-$i-$(printf 'M%.0s' $(seq 1 200))"; done
        mv ext/origin ext/renamed-origin
      `);
      await runOk('btrfs', ['subvolume', 'snapshot', '-r', `${mnt}/vol`, `${mnt}/s1`]);
      await script('mv zzlast zz2; mkdir zzlast; mv zz2 zzlast/; rm -rf cy1; echo back > h1; ln h1 same/name/hl');
      await runOk('btrfs', ['subvolume', 'snapshot', '-r', `${mnt}/vol`, `${mnt}/s2`]);
    } finally {
      await m.close();
    }
    const ids = await subvolIds(img);
    for (const proto of [1, 2] as const) {
      const files: string[] = [];
      for (const [i, s] of ['s0', 's1', 's2'].entries()) {
        const f = path.join(work, `v${proto}-${s}.stream`);
        await sendToFile(img, f, { snapshot: ids.get(s)!, parent: i > 0 ? ids.get(`s${i - 1}`) : undefined, proto });
        await kernelDump(f);
        files.push(f);
      }
      const bimg = path.join(work, `b${proto}.img`);
      await mkfs(bimg, 512 * MiB);
      const b = await mount(bimg, `hard-b${proto}`);
      for (const f of files) await kernelReceive(f, b.mnt);
      const a = await mount(img, `hard-a${proto}`, true);
      for (const s of ['s0', 's1', 's2']) {
        const { diffs } = await compareTrees(path.join(a.mnt, s), path.join(b.mnt, s));
        expect(diffs, `${s} protocol ${proto}`).to.deep.equal([]);
      }
      const inc = await summarize(files[1]!);
      expect(inc.writeBytes, 'only changed data is written').to.be.below(64 * 1024);
      // the first orphan names were taken by real files: the next free ones were used
      expect(await kernelDump(files[1]!)).to.match(/\/o\d+-\d+-[1-9]\b/);
      for (const m2 of mounts.splice(0)) await m2.close();
    }
  });

  it('clone sources (-c) and reflinks inside the snapshot become CLONE commands', async () => {
    const work = path.join(dir, 'clone');
    await fsp.mkdir(work);
    const img = path.join(work, 'a.img');
    await mkfs(img, 512 * MiB);
    const mnt = path.join(work, 'ma');
    const m = await Mounted.open(img, mnt);
    try {
      await runOk('bash', ['-c', `set -e; cd ${mnt}; btrfs -q subvolume create vol; cd vol
        head -c 3000000 /dev/urandom > one; head -c 2000000 /dev/urandom > two; mkdir d; echo small > d/small
        cp --reflink=always one one-again
        cd ..; btrfs -q subvolume snapshot -r vol base; cd vol
        cp --reflink=always two d/two-copy; cat one > fresh; cp --reflink=always ../base/one d/from-base
        cd ..; btrfs -q subvolume snapshot -r vol next`]);
    } finally {
      await m.close();
    }
    const ids = await subvolIds(img);
    const full = path.join(work, 'base.stream');
    const st0 = await sendToFile(img, full, { snapshot: ids.get('base')! });
    expect(st0.cloneBytes, 'one-again is a reflink of one').to.be.at.least(2_900_000);
    // next sent in full, with base as a clone source
    const withC = path.join(work, 'next-c.stream');
    const st1 = await sendToFile(img, withC, { snapshot: ids.get('next')!, cloneSources: [ids.get('base')!] });
    expect(st1.cloneBytes).to.be.at.least(2 * 2_900_000 + 1_900_000);
    expect(st1.dataBytes).to.be.below(3_200_000 + 2_100_000 + 64 * 1024);
    await kernelDump(withC);
    const bimg = path.join(work, 'b.img');
    await mkfs(bimg, 512 * MiB);
    const b = await mount(bimg, 'clone-b');
    await kernelReceive(full, b.mnt);
    await kernelReceive(withC, b.mnt);
    const a = await mount(img, 'clone-a', true);
    for (const s of ['base', 'next']) expect((await compareTrees(path.join(a.mnt, s), path.join(b.mnt, s))).diffs, s).to.deep.equal([]);
    // the received copies share extents too
    const du = await runOk('btrfs', ['filesystem', 'du', '-s', '--raw', path.join(b.mnt, 'next')]);
    const [, exclusive] = du.stdout.trim().split('\n').pop()!.trim().split(/\s+/).map(Number);
    expect(exclusive, du.stdout).to.be.below(3_300_000);
  });

  it('--no-data sends UPDATE_EXTENT for changed ranges and no file bytes', async () => {
    const work = path.join(dir, 'nodata');
    await fsp.mkdir(work);
    const img = path.join(work, 'a.img');
    await mkfs(img, 256 * MiB);
    const mnt = path.join(work, 'ma');
    const m = await Mounted.open(img, mnt);
    try {
      await runOk('bash', ['-c', `set -e; cd ${mnt}; btrfs -q subvolume create vol; cd vol
        head -c 700000 /dev/urandom > f; echo x > g; cd ..; btrfs -q subvolume snapshot -r vol s0; cd vol
        dd if=/dev/urandom of=f bs=4096 seek=20 count=4 conv=notrunc status=none; fallocate -p -o 0 -l 8192 f; echo y >> g
        cd ..; btrfs -q subvolume snapshot -r vol s1`]);
    } finally {
      await m.close();
    }
    const ids = await subvolIds(img);
    for (const [i, s] of ['s0', 's1'].entries()) {
      const f = path.join(work, `${s}.stream`);
      await sendToFile(img, f, { snapshot: ids.get(s)!, parent: i ? ids.get('s0') : undefined, noData: true });
      const sum = await summarize(f);
      expect(sum.writeBytes).to.equal(0);
      expect(sum.counts.update_extent ?? 0).to.be.greaterThan(0);
      const dump = await kernelDump(f);
      if (i === 1) {
        expect(dump).to.match(/update_extent\s+\.\/s1\/f\s+offset=81920 len=16384/);
        expect(dump).to.match(/update_extent\s+\.\/s1\/f\s+offset=0 len=8192/);
      }
    }
  });

  it('an incremental send reads blocks in proportion to the change, not to the snapshot', async () => {
    const work = path.join(dir, 'cost');
    await fsp.mkdir(work);
    const img = path.join(work, 'a.img');
    await mkfs(img, 512 * MiB);
    const mnt = path.join(work, 'ma');
    const m = await Mounted.open(img, mnt);
    try {
      await runOk('bash', ['-c', `set -e; cd ${mnt}; btrfs -q subvolume create vol; cd vol
        python3 -c 'import os
for d in range(20):
    os.mkdir(f"d{d}")
    for f in range(1000):
        open(f"d{d}/f{f}", "w").write(f"{d} {f}\\n")'
        cd ..; btrfs -q subvolume snapshot -r vol s0; cd vol
        echo changed >> d3/f77; echo new > d11/newfile; rm d17/f5; mv d2/f9 d19/f9moved; chmod 600 d8/f8
        cd ..; btrfs -q subvolume snapshot -r vol s1`]);
    } finally {
      await m.close();
    }
    const ids = await subvolIds(img);
    const f = path.join(work, 'inc.stream');
    const st = await sendToFile(img, f, { snapshot: ids.get('s1')!, parent: ids.get('s0')! });
    console.log(`      20,000 files, 5 changed: ${st.diffBlocks} tree blocks compared, ${st.sharedSubtrees} shared subtrees skipped, ${st.commands} commands, ${st.bytes} bytes`);
    expect(st.diffBlocks).to.be.below(80);
    expect(st.sharedSubtrees).to.be.greaterThan(0);
    expect(st.commands).to.be.below(40);
    const bimg = path.join(work, 'b.img');
    await mkfs(bimg, 512 * MiB);
    const b = await mount(bimg, 'cost-b');
    const full = path.join(work, 'full.stream');
    await sendToFile(img, full, { snapshot: ids.get('s0')! });
    await kernelReceive(full, b.mnt);
    await kernelReceive(f, b.mnt);
    const a = await mount(img, 'cost-a', true);
    expect((await compareTrees(path.join(a.mnt, 's1'), path.join(b.mnt, 's1'))).diffs).to.deep.equal([]);
  });
});
