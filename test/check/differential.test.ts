/**
 * Differential mutation test: our check against `btrfs check --readonly`
 * on thousands of slightly broken images. Valid kernel-made images (the
 * native fixtures, plus fresh ones made by mkfs.btrfs and the kernel when
 * this machine allows) get one seeded mutation each (test/helpers/mutate.ts:
 * an item field, a key, a header field, a bit, a dropped item, a superblock
 * field; checksums recomputed so the damage reaches the parsers), then both
 * checks run on the same file. Whenever btrfs check finds an error we must
 * find one too; our check must never crash (anything but a report) nor hang,
 * and checking snapshots by difference (the default) must find exactly what
 * checking every tree in full finds.
 * Where we find an error btrfs check does not, it is counted and printed
 * (often rightly: we apply the kernel's tree-checker rules, which btrfs check
 * 6.2 does not all have), never asserted.
 *
 * Budget: TSBTRFS_MUTATIONS (default 1500: thousands per CI run, about 40 s) mutations, and at most
 * TSBTRFS_MUTATION_SECONDS (default 60 when TSBTRFS_MUTATIONS is unset,
 * unlimited otherwise). TSBTRFS_SEED fixes the run's seed (printed);
 * TSBTRFS_MUTATION=BASE:SEED replays one mutation and prints both outputs;
 * TSBTRFS_MUTATION_LOG=FILE writes every disagreement as JSON lines;
 * TSBTRFS_MUTATION_BASES=REGEX mutates only the base images whose names match.
 * The fresh images differ on every run (random data, new uuids), so a
 * replayed fresh-* mutation only means the same thing with
 * TSBTRFS_FRESH_DIR=DIR: fresh images are made there once and reused.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { promises as fsp, appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileDevice } from '../../src/device/file-device.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import { fixtureCopy, listFixtures } from '../helpers/fixtures.js';
import { run, mkfs, withMount, sh, nativeAvailable, nativeRequired } from '../helpers/kernel.js';
import { buildCatalog, planMutation, type Catalog, type Mutation } from '../helpers/mutate.js';
import { CheckWorker, type WorkerResult } from '../helpers/check-worker.js';
import { rng, testSeed } from '../helpers/overlay-device.js';

interface Base { name: string; file: string; cat: Catalog }

type Theirs = { verdict: 'error' | 'clean' | 'crash' | 'timeout'; code: number | null; lines: string[]; output: string };

/** Lines of btrfs check output that are progress or summary, whatever words they contain. */
const BENIGN = [/no error found/i, /^\s*\[\d\/\d\]/, /^Opening filesystem/i, /^Checking filesystem on/i, /^UUID:/, /^found \d+ bytes used/,
  /^total (csum|tree|fs tree|extent tree) bytes/, /^btree space waste/, /^file data blocks allocated/, /^\s*referenced \d+/,
  /^\s*$/, /^exit code/,
  // Informational: the v1 space cache is stale and would be rebuilt; btrfs check still says "no error found".
  /^cache and super generation don't match, space cache will be invalidated$/];

/** btrfs check's verdict: an error is a non-zero exit, or (exit 0) any line that is not progress or summary. */
function judgeTheirs(r: { code: number | null; signal: NodeJS.Signals | null; output: string }): Theirs {
  const lines = r.output.split('\n').filter((l) => !BENIGN.some((b) => b.test(l)));
  if (r.signal === 'SIGKILL') return { verdict: 'timeout', code: null, lines, output: r.output };
  if (r.signal || (r.code !== null && r.code > 128)) return { verdict: 'crash', code: r.code, lines, output: r.output };
  if (r.code !== 0) return { verdict: 'error', code: r.code, lines, output: r.output };
  // Exit 0 with lines that only warn is still clean for btrfs check; anything else it prints is a finding,
  // except qgroup differences it has explained away (rescan running, or accounting marked inconsistent).
  const explained = /Rescan hasn't been initiali[sz]ed|Qgroup rescan is running/.test(r.output) && /no error found/.test(r.output);
  const findings = lines.filter((l) => !/^WARNING:/.test(l) && !(explained && /^(Counts for qgroup id|our:|disk:|diff:|Rescan hasn't|Qgroup rescan is running)/.test(l)));
  return { verdict: findings.length ? 'error' : 'clean', code: 0, lines, output: r.output };
}

async function theirCheck(file: string): Promise<Theirs> {
  const r = await run('btrfs', ['check', '--readonly', file], { timeoutMs: 20_000 });
  return judgeTheirs(r);
}

/**
 * Damage we knowingly do not flag although btrfs check does, each with its
 * reason. A mismatch matching one of these is counted apart, not failed.
 */
const OUT_OF_SCOPE: { why: string; match: (m: Mutation, theirs: Theirs) => boolean }[] = [];

function mutationSeed(runSeed: number, i: number): number {
  return (Math.imul(runSeed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(i + 1, 0xc2b2ae35)) >>> 0;
}

const FRESH = ['fresh-quota-snapshots', 'fresh-no-skinny', 'fresh-fst-bitmaps', 'fresh-snapshot-chain'];

/** Fresh kernel-made images covering what the fixtures lack: quotas, non-skinny extent items, free space bitmaps. */
async function freshImages(dir: string): Promise<{ name: string; file: string }[]> {
  const out: { name: string; file: string }[] = [];
  const quota = path.join(dir, 'quota-snapshots.img');
  await mkfs(quota, 256 << 20);
  await withMount(quota, {}, async (m) => {
    await sh(`cd ${m} && btrfs quota enable . && mkdir -p d/e && for i in $(seq 1 60); do head -c $((i * 1500)) /dev/urandom > d/f$i; done
      ln d/f1 d/e/link1 && ln -s f2 d/sym && setfattr -n user.k -v v d/f3 && btrfs subvolume create sv >/dev/null
      cp d/f4 sv/ && btrfs subvolume snapshot . snap >/dev/null && echo more >> d/f5 && rm d/f6 && btrfs qgroup create 1/0 . && sync`);
  });
  out.push({ name: 'fresh-quota-snapshots', file: quota });
  const noskinny = path.join(dir, 'no-skinny.img');
  await mkfs(noskinny, 128 << 20, ['-O', '^skinny-metadata']);
  await withMount(noskinny, {}, async (m) => {
    await sh(`cd ${m} && mkdir a && for i in $(seq 1 400); do echo $i > a/file-with-a-long-name-$i; done && head -c 300000 /dev/urandom > big && sync`);
  });
  out.push({ name: 'fresh-no-skinny', file: noskinny });
  const bitmaps = path.join(dir, 'fst-bitmaps.img');
  await mkfs(bitmaps, 256 << 20);
  await withMount(bitmaps, {}, async (m) => {
    await sh(`cd ${m} && for i in $(seq 1 1500); do head -c 4096 /dev/zero > f$i; done && sync && rm -f $(seq -f 'f%g' 1 2 1500) && sync`);
  });
  out.push({ name: 'fresh-fst-bitmaps', file: bitmaps });
  // Snapshots that diverge a little each time: what the inode pass checks by difference.
  const snaps = path.join(dir, 'snapshot-chain.img');
  await mkfs(snaps, 256 << 20);
  await withMount(snaps, {}, async (m) => {
    await sh(`cd ${m} && btrfs subvolume create sv >/dev/null && cd sv && for d in $(seq 1 12); do mkdir d$d; for f in $(seq 1 40); do echo $d-$f > d$d/f$f; done; done
      ln d1/f1 d2/hard && setfattr -n user.x -v y d3/f3 && cd .. && btrfs subvolume snapshot sv s1 >/dev/null
      cd sv && rm d4/f*0 && mv d5/f5 d6/moved && echo more >> d7/f7 && mkdir d13 && touch d13/new && head -c 20000 /dev/urandom > d8/big
      cd .. && btrfs subvolume snapshot -r sv s2 >/dev/null && rm -r sv/d9 && btrfs subvolume snapshot sv s3 >/dev/null && echo x > s3/d1/f2 && sync`);
  });
  out.push({ name: 'fresh-snapshot-chain', file: snaps });
  return out;
}

async function loadBase(name: string, file: string): Promise<Base> {
  const dev = await FileDevice.open(file, { readOnly: true });
  try {
    return { name, file, cat: await buildCatalog(await FsInfo.open(dev)) };
  } finally {
    await dev.close();
  }
}

/** Lays the mutation's patches over the file, runs `fn`, and puts the original bytes back, whatever happens. */
async function withPatches<T>(file: string, m: Mutation, fn: () => Promise<T>): Promise<T> {
  const fh = await fsp.open(file, 'r+');
  const saved: { offset: number; bytes: Buffer }[] = [];
  try {
    for (const p of m.patches) {
      const orig = Buffer.alloc(p.bytes.length);
      await fh.read(orig, 0, orig.length, p.offset);
      saved.push({ offset: p.offset, bytes: orig });
      await fh.write(p.bytes, 0, p.bytes.length, p.offset);
    }
    await fh.sync();
    return await fn();
  } finally {
    for (const s of saved.reverse()) await fh.write(s.bytes, 0, s.bytes.length, s.offset);
    await fh.sync();
    await fh.close();
  }
}

type Outcome = 'agree-error' | 'agree-clean' | 'missed' | 'out-of-scope' | 'extra' | 'ours-crash' | 'ours-hang' | 'modes-differ' | 'theirs-crash' | 'theirs-timeout';

function outcomeOf(m: Mutation, theirs: Theirs, ours: WorkerResult): { outcome: Outcome; why?: string } {
  if (ours.kind === 'crash') return { outcome: 'ours-crash' };
  if (ours.kind === 'ok' && ours.summary.modesDiffer) return { outcome: 'modes-differ', why: ours.summary.modesDiffer };
  if (ours.kind === 'hang') return { outcome: 'ours-hang' };
  if (theirs.verdict === 'crash') return { outcome: 'theirs-crash' };
  if (theirs.verdict === 'timeout') return { outcome: 'theirs-timeout' };
  const oursErr = ours.summary.errors > 0;
  if (theirs.verdict === 'error') {
    if (oursErr) return { outcome: 'agree-error' };
    const oos = OUT_OF_SCOPE.find((x) => x.match(m, theirs));
    return oos ? { outcome: 'out-of-scope', why: oos.why } : { outcome: 'missed' };
  }
  return { outcome: oursErr ? 'extra' : 'agree-clean' };
}

function describeOurs(r: WorkerResult): string {
  if (r.kind === 'crash') return `CRASH ${r.message}`;
  if (r.kind === 'hang') return `HANG after ${r.afterMs.toFixed(0)} ms`;
  return r.summary.lines.length ? r.summary.lines.slice(0, 4).join('\n        ') : 'clean';
}

describe('check: differential mutation test against btrfs check', function () {
  this.timeout(0);
  const bases: Base[] = [];
  let dir = '';
  let worker: CheckWorker | undefined;

  before(async function () {
    const haveProgs = spawnSync('btrfs', ['--version']).status === 0;
    if (!haveProgs) {
      if (nativeRequired()) throw new Error('REQUIRE_NATIVE is set but btrfs-progs is not installed');
      console.warn('    skipped: btrfs-progs not installed');
      this.skip();
    }
    dir = mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-mutations-'));
    for (const name of await listFixtures()) bases.push(await loadBase(name, await fixtureCopy(name, dir)));
    const keep = process.env.TSBTRFS_FRESH_DIR;
    const kept = keep ? FRESH.map((name) => ({ name, file: path.join(keep, `${name}.img`) })) : [];
    if (kept.length && kept.every((f) => existsSync(f.file))) {
      for (const f of kept) bases.push(await loadBase(f.name, f.file));
    } else if ((await nativeAvailable()).ok && process.env.TSBTRFS_NO_FRESH === undefined) {
      const made = await freshImages(dir);
      if (keep) {
        mkdirSync(keep, { recursive: true });
        for (const f of made) copyFileSync(f.file, path.join(keep, `${f.name}.img`));
      }
      for (const f of made) bases.push(await loadBase(f.name, f.file));
    }
    // The pristine images must be clean for both, or the comparison means nothing.
    for (const b of bases) {
      const t = await theirCheck(b.file);
      expect(t.verdict, `btrfs check on pristine ${b.name}:\n${t.output}`).to.equal('clean');
    }
    worker = new CheckWorker();
  });

  after(async () => {
    await worker?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('finds an error wherever btrfs check does, and never crashes or hangs', async function () {
    const replay = process.env.TSBTRFS_MUTATION;
    const w = worker!;
    if (replay) {
      const [name, s] = replay.split(':');
      const b = bases.find((x) => x.name === name);
      expect(b, `base ${name} (have ${bases.map((x) => x.name).join(', ')})`).to.not.equal(undefined);
      const m = planMutation(b!.cat, rng(Number(s)))!;
      const [theirs, ours] = await withPatches(b!.file, m, () => Promise.all([theirCheck(b!.file), w.check(b!.file, 30_000)]));
      console.log(`    ${b!.name}:${s} ${m.kind}: ${m.desc}\n    btrfs check (${theirs.verdict}, exit ${theirs.code}):\n${theirs.output}\n    tsbtrfs: ${ours.kind === 'ok' ? ours.summary.lines.join('\n') || 'clean' : describeOurs(ours)}`);
      return;
    }
    const count = Number(process.env.TSBTRFS_MUTATIONS ?? 1500);
    const seconds = Number(process.env.TSBTRFS_MUTATION_SECONDS ?? (process.env.TSBTRFS_MUTATIONS ? Infinity : 60));
    const runSeed = testSeed();
    const log = process.env.TSBTRFS_MUTATION_LOG;
    const only = process.env.TSBTRFS_MUTATION_BASES ? new RegExp(process.env.TSBTRFS_MUTATION_BASES) : undefined;
    const pool = only ? bases.filter((b) => only.test(b.name)) : bases;
    expect(pool.length, `base images matching ${only}`).to.be.above(0);
    console.log(`    seed ${runSeed} (TSBTRFS_SEED=${runSeed} replays this run), ${pool.length} base images, up to ${count} mutations / ${seconds} s`);
    const t0 = performance.now();
    const tally = new Map<string, Map<Outcome, number>>();
    const failures: string[] = [];
    const extras: string[] = [];
    let done = 0;
    for (let i = 0; i < count && (performance.now() - t0) / 1000 < seconds; i++) {
      const b = pool[i % pool.length]!;
      const ms = mutationSeed(runSeed, i);
      const m = planMutation(b.cat, rng(ms));
      if (!m) continue;
      const [theirs, ours] = await withPatches(b.file, m, () => Promise.all([theirCheck(b.file), w.check(b.file, 30_000, true)]));
      const { outcome, why } = outcomeOf(m, theirs, ours);
      done++;
      let t = tally.get(m.kind);
      if (!t) tally.set(m.kind, t = new Map());
      t.set(outcome, (t.get(outcome) ?? 0) + 1);
      if (outcome === 'agree-error' || outcome === 'agree-clean') continue;
      const text = `[${outcome}${why ? `: ${why}` : ''}] TSBTRFS_MUTATION=${b.name}:${ms}  ${m.kind}: ${m.desc}\n` +
        `        btrfs check (exit ${theirs.code}): ${theirs.lines.slice(0, 4).join(' | ') || 'clean'}\n        tsbtrfs: ${describeOurs(ours)}`;
      if (log) appendFileSync(log, JSON.stringify({ outcome, why, base: b.name, seed: ms, kind: m.kind, desc: m.desc, theirs: theirs.lines.slice(0, 30), theirsCode: theirs.code, ours: ours.kind === 'ok' ? ours.summary.lines : describeOurs(ours) }) + '\n');
      if (outcome === 'missed' || outcome === 'ours-crash' || outcome === 'ours-hang' || outcome === 'modes-differ') failures.push(text);
      else extras.push(text);
    }
    const elapsed = (performance.now() - t0) / 1000;
    const outcomes: Outcome[] = ['agree-error', 'agree-clean', 'missed', 'out-of-scope', 'extra', 'ours-crash', 'ours-hang', 'modes-differ', 'theirs-crash', 'theirs-timeout'];
    const sum = (o: Outcome) => [...tally.values()].reduce((n, t) => n + (t.get(o) ?? 0), 0);
    console.log(`    ${done} mutations in ${elapsed.toFixed(1)} s: ${outcomes.map((o) => `${o} ${sum(o)}`).join(', ')}`);
    for (const [kind, t] of [...tally].sort()) console.log(`      ${kind.padEnd(10)} ${outcomes.filter((o) => t.get(o)).map((o) => `${o} ${t.get(o)}`).join(', ')}`);
    for (const e of extras.slice(0, 20)) console.log(`      ${e}`);
    if (extras.length > 20) console.log(`      ... and ${extras.length - 20} more where only one side complained or btrfs check itself failed`);
    for (const f of failures.slice(0, 30)) console.log(`      ${f}`);
    // Restoring must have left every image as it was.
    for (const b of bases) expect((await theirCheck(b.file)).verdict, `${b.name} restored`).to.equal('clean');
    // The mutations themselves go into the message: CI keeps only the tail of the output.
    expect(failures.length, `${failures.length} mutations btrfs check flags and we do not, or that crash or hang our check (run seed ${runSeed}):\n      ${failures.slice(0, 5).join('\n      ')}\n`).to.equal(0);
  });
});
