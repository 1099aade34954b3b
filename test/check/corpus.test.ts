/**
 * Our check against btrfs check on btrfs-progs' own test images
 * (../shared/corpus, see its README.md): where btrfs check finds errors we
 * must find at least one (or fail to open the image); where it finds none we
 * must find none. btrfs check 6.2 sometimes prints an error and still exits 0
 * (an orphan dev extent): what it printed counts, not its exit code. Where it
 * warns that a device is missing (one member of a multi-device filesystem,
 * opened degraded) we must warn about the same device and otherwise agree.
 * Disagreements are printed as a table; the test fails only on false
 * positives on clean images, on disagreements about degraded members, and
 * on crashes (any non-BtrfsError).
 *
 * Images are restored once per run into a temp dir (sparse), or into
 * TSBTRFS_CORPUS_CACHE when set (kept between runs).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { repoRoot } from '../helpers/fixtures.js';

interface Row { path: string; kind: string; cls: string; first: string }

const corpusDir = path.resolve(repoRoot(), '..', 'shared', 'corpus');

function rows(): Row[] {
  const lines = readFileSync(path.join(corpusDir, 'expected.tsv'), 'utf8').trim().split('\n');
  const head = lines[0]!.split('\t');
  const col = (n: string) => head.indexOf(n);
  return lines.slice(1).map((l) => {
    const c = l.split('\t');
    return { path: c[col('path')]!, kind: c[col('source_kind')]!, cls: c[col('check_class')]!, first: c[col('first_error_line')] ?? '' };
  });
}

const sh = (cmd: string) => spawnSync('sh', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** A raw image for the row, restored under `dir`; undefined (with a reason) when it cannot be. */
function restore(r: Row, dir: string, haveImageTool: boolean): { file?: string; skip?: string } {
  const src = path.join(corpusDir, r.path);
  const out = path.join(dir, r.path.replace(/[/]/g, '__') + '.raw');
  if (existsSync(out) && statSync(out).size > 0) return { file: out };
  let res;
  switch (r.kind) {
    case 'raw.xz':
      res = sh(`xz -dc ${q(src)} | cp --sparse=always /dev/stdin ${q(out)}`);
      break;
    case 'btrfs-image':
    case 'btrfs-image.xz': {
      if (!haveImageTool) return { skip: 'btrfs-image not installed' };
      let dump = src;
      if (r.kind === 'btrfs-image.xz') {
        dump = out + '.dump';
        sh(`xz -dc ${q(src)} > ${q(dump)}`);
      }
      res = sh(`btrfs-image -r ${q(dump)} ${q(out)}`);
      if (dump !== src) rmSync(dump, { force: true });
      break;
    }
    case 'tar-raw': {
      const t = out + '.d';
      mkdirSync(t, { recursive: true });
      res = sh(`tar -xJf ${q(src)} -C ${q(t)} --sparse && mv ${q(path.join(t, 'test.img'))} ${q(out)} && rm -rf ${q(t)}`);
      break;
    }
    default:
      return { skip: `unknown source kind ${r.kind}` };
  }
  if (res.status !== 0 || !existsSync(out)) return { skip: `restore failed: ${res.stderr.toString().trim().split('\n').pop()}` };
  return { file: out };
}

describe('check: btrfs-progs corpus', function () {
  this.timeout(1_800_000);
  it('agrees with btrfs check', async function () {
    if (!existsSync(path.join(corpusDir, 'expected.tsv'))) {
      console.log(`    skipped: no corpus at ${corpusDir}`);
      this.skip();
    }
    const cache = process.env.TSBTRFS_CORPUS_CACHE;
    const dir = cache ?? mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-corpus-'));
    mkdirSync(dir, { recursive: true });
    const haveImageTool = spawnSync('btrfs-image', ['-h']).error === undefined;
    const table: string[] = [];
    const falsePositives: string[] = [];
    const degraded: string[] = [];
    let agree = 0;
    let skipped = 0;
    try {
      for (const r of rows()) {
        const { file, skip } = restore(r, dir, haveImageTool);
        if (!file) {
          skipped++;
          table.push(`SKIP  ${r.path}: ${skip}`);
          continue;
        }
        const rep = await checkImage(file);
        const ours = rep.errors > 0 ? 'errors' : 'clean';
        const first = rep.findings.find((f) => f.severity === 'error');
        // Exit 0 with messages: a warning is still clean, an error printed without the exit code is an error.
        const theirs = r.cls === 'rc0-with-messages' ? (/^warning|^WARNING/.test(r.first) ? 'clean' : 'errors') : r.cls;
        // One member of a multi-device filesystem: the missing device must be named, as a warning.
        const missing = /^warning, device (\d+) is missing/.exec(r.first)?.[1];
        const warned = missing === undefined || rep.findings.some((f) => f.severity === 'warning' && f.message === `device ${missing} is missing`);
        if (ours === theirs && warned) { agree++; continue; }
        const line = `${r.path}\n      btrfs check: ${r.cls}${r.first ? ` (${r.first})` : ''}\n      tsbtrfs:     ${ours}${first ? ` (${formatFinding(first)})` : ''}` +
          (warned ? '' : ` without the warning that device ${missing} is missing`);
        table.push(line);
        if (r.cls === 'clean') falsePositives.push(line);
        if (missing !== undefined) degraded.push(line);
        if (!cache) rmSync(file, { force: true });
      }
    } finally {
      if (!cache) rmSync(dir, { recursive: true, force: true });
    }
    console.log(`    corpus: ${agree} agree, ${table.length - skipped} disagree, ${skipped} skipped`);
    for (const l of table) console.log(`    ${l}`);
    expect(falsePositives, 'errors reported on images btrfs check finds clean').to.deep.equal([]);
    expect(degraded, 'degraded members of multi-device filesystems judged unlike btrfs check').to.deep.equal([]);
  });
});
