/**
 * Access to the native fixtures in `native-fixtures/` (images made by the real
 * mkfs.btrfs + kernel with scripts/make-native-fixtures.sh).
 *
 * `fixturePath(name)` decompresses NAME.img.gz ONCE per process into a temp dir,
 * keeping it sparse (all-zero blocks are not written; the file is truncated to
 * its full size). Treat that file as read-only: it is shared by all tests of the
 * run. Use `fixtureCopy(name)` for a private, writable copy.
 */
import { createReadStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGunzip, gunzipSync } from 'node:zlib';
import type { Manifest } from './manifest.js';
import type { SubvolumeInfo } from './kernel.js';

/** Schema of native-fixtures/NAME.json. */
export interface FixtureManifest {
  name: string;
  description: string;
  /** Arguments given to mkfs.btrfs (besides -q -f IMG). */
  mkfs_args: string[];
  /** Mount options used while populating (several phases separated by '; ' when remounted). */
  mount_opts: string;
  /** Apparent size of the image in bytes. */
  image_size: number;
  /** sha256 of the raw (decompressed) image. */
  image_sha256: string;
  /** `uname -r` of the kernel that made it. */
  kernel: string;
  /** `btrfs --version`. */
  progs: string;
  /** Filesystem properties read back from the superblock. */
  fs: {
    uuid: string;
    nodesize: number;
    sectorsize: number;
    csum_type: string;
    incompat_flags: string[];
    compat_ro_flags: string[];
  };
  /** Subvolumes as listed by `btrfs subvolume list -a -u -q -R -g -c` (+ ro property). */
  subvolumes: SubvolumeInfo[];
  /** `btrfs subvolume get-default` id. */
  default_subvolume: number;
  /** Ids of subvolumes deleted but not yet cleaned (`btrfs subvolume list -d`). */
  deleted_subvolumes: number[];
  /** Fixture-specific facts (e.g. which inode has which extent layout), free form. */
  notes?: Record<string, unknown>;
  /** Result of `btrfs check --readonly` (full text in NAME.check.txt). */
  check: { ok: boolean; code: number | null };
  /** Manifest of the top-level subvolume mounted with `ro,subvolid=5`. */
  tree: Manifest;
}

/** Absolute path of the repository root (directory with package.json and native-fixtures/). */
export function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(d, 'package.json')) && existsSync(path.join(d, 'native-fixtures'))) return d;
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  // Fall back to dist/test/helpers -> repo root
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

/**
 * A compiled file of this build (`src/cli/main.js`, ...): the build these
 * tests were compiled into, not necessarily dist/, so that builds into other
 * directories test themselves.
 */
export function builtPath(rel: string): string {
  return fileURLToPath(new URL(`../../${rel}`, import.meta.url));
}

/** Directory holding the fixtures (override with NATIVE_FIXTURES_DIR). */
export function fixturesDir(): string {
  return process.env.NATIVE_FIXTURES_DIR ?? path.join(repoRoot(), 'native-fixtures');
}

/** Names of all fixtures (NAME for every NAME.img.gz that has a NAME.json), sorted. */
export async function listFixtures(): Promise<string[]> {
  const dir = fixturesDir();
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.endsWith('.img.gz'))
    .map((n) => n.slice(0, -'.img.gz'.length))
    .filter((n) => names.includes(`${n}.json`))
    .sort();
}

let tmpDir: string | undefined;
function fixtureTmpDir(): string {
  if (!tmpDir) {
    tmpDir = mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-fixtures-'));
    const dir = tmpDir;
    process.once('exit', () => {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        /* ignore */
      }
    });
  }
  return tmpDir;
}

const BLOCK = 64 * 1024;

function isZero(b: Buffer): boolean {
  // Compare 8 bytes at a time where possible.
  const n = b.length - (b.length % 8);
  for (let i = 0; i < n; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  for (let i = n; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Gunzip `gz` into `dest`, skipping all-zero 64 KiB blocks, then truncate to the full size. */
export async function decompressSparse(gz: string, dest: string): Promise<number> {
  const fh = await fs.open(dest, 'w');
  try {
    let pos = 0;
    const buf = Buffer.alloc(BLOCK);
    let fill = 0;
    const flush = async (len: number) => {
      const chunk = buf.subarray(0, len);
      if (!isZero(chunk)) {
        let off = 0;
        while (off < len) {
          const { bytesWritten } = await fh.write(chunk, off, len - off, pos + off);
          off += bytesWritten;
        }
      }
      pos += len;
    };
    const stream = createReadStream(gz).pipe(createGunzip());
    for await (const c of stream as AsyncIterable<Buffer>) {
      let off = 0;
      while (off < c.length) {
        const n = Math.min(BLOCK - fill, c.length - off);
        c.copy(buf, fill, off, off + n);
        fill += n;
        off += n;
        if (fill === BLOCK) {
          await flush(BLOCK);
          fill = 0;
        }
      }
    }
    if (fill > 0) await flush(fill);
    await fh.truncate(pos);
    return pos;
  } finally {
    await fh.close();
  }
}

function gzPath(name: string): string {
  return path.join(fixturesDir(), `${name}.img.gz`);
}

const cache = new Map<string, Promise<string>>();

/**
 * Path of the decompressed (sparse) image of fixture `name`; decompressed once per process.
 * Do not modify it — use fixtureCopy() for a writable copy.
 */
export function fixturePath(name: string): Promise<string> {
  let p = cache.get(name);
  if (!p) {
    p = (async () => {
      const gz = gzPath(name);
      if (!existsSync(gz)) throw new Error(`no such native fixture: ${gz} (have: ${(await listFixtures()).join(', ')})`);
      const dest = path.join(fixtureTmpDir(), `${name}.img`);
      await decompressSparse(gz, dest);
      return dest;
    })();
    cache.set(name, p);
    p.catch(() => cache.delete(name));
  }
  return p;
}

let copySeq = 0;
/** A fresh private writable sparse copy of fixture `name` (in `dir`, default the run's temp dir). */
export async function fixtureCopy(name: string, dir?: string): Promise<string> {
  const dest = path.join(dir ?? fixtureTmpDir(), `${name}.copy${++copySeq}.img`);
  await decompressSparse(gzPath(name), dest);
  return dest;
}

const manifestCache = new Map<string, Promise<FixtureManifest>>();

/** Parsed native-fixtures/NAME.json. */
export function fixtureManifest(name: string): Promise<FixtureManifest> {
  let p = manifestCache.get(name);
  if (!p) {
    p = fs
      .readFile(path.join(fixturesDir(), `${name}.json`), 'utf8')
      .then((t) => JSON.parse(t) as FixtureManifest);
    manifestCache.set(name, p);
    p.catch(() => manifestCache.delete(name));
  }
  return p;
}

/** `TZ=UTC btrfs inspect-internal dump-tree` output recorded for fixture `name`. */
export async function fixtureDumpTree(name: string): Promise<string> {
  return gunzipSync(await fs.readFile(path.join(fixturesDir(), `${name}.dump-tree.txt.gz`))).toString('utf8');
}

/** `btrfs check --readonly` output recorded for fixture `name`. */
export async function fixtureCheckOutput(name: string): Promise<string> {
  return fs.readFile(path.join(fixturesDir(), `${name}.check.txt`), 'utf8');
}
