/**
 * `npm run demo`: the main job on a built-in example, with no root and no
 * kernel mount. It makes a btrfs image, fills a subvolume from an example
 * tree it writes to a temporary directory (text, a few MiB of binary data, a
 * sparse file, a symlink, a hard link, an xattr, a fifo, nanosecond times),
 * snapshots it read-only, changes files (edit, rename, delete, add, chmod,
 * xattr, a reflink copy), snapshots again, sends a full and an incremental
 * stream, receives both into a second image, checks both images, compares
 * every received file with its original, and prints what it did with sizes
 * and times. The images are left in the temporary directory for
 * `mount -o loop`, `btrfs check` or `tsbtrfs ls`, unless --clean.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { createWriteStream, createReadStream } from 'node:fs';
import {
  mkfs, WritableFilesystem, Filesystem, importTree, send, receive, checkImage, type Resolved,
} from '../src/index.js';

const MiB = 1024 * 1024;
const clean = process.argv.includes('--clean');

function mib(n: number): string {
  return n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

/** Deterministic bytes, so every run makes the same example. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i + 4 <= n; i += 4) {
    x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

/** The example tree: a small project with a bit of everything btrfs keeps. */
async function writeExample(root: string): Promise<void> {
  const at = (p: string) => path.join(root, p);
  await fsp.mkdir(at('src/lib'), { recursive: true });
  await fsp.mkdir(at('assets'), { recursive: true });
  await fsp.mkdir(at('docs'), { recursive: true });
  await fsp.writeFile(at('README.md'), '# example\n\nA tree made by the tsbtrfs demo.\n');
  for (let i = 0; i < 40; i++) {
    await fsp.writeFile(at(`src/lib/module${i}.ts`), `export const value${i} = ${i};\n`.repeat(10 + i * 7));
  }
  await fsp.writeFile(at('src/main.ts'), 'import { value1 } from "./lib/module1";\nconsole.log(value1);\n');
  await fsp.writeFile(at('assets/texture.bin'), bytes(3 * MiB + 1234, 1));
  await fsp.writeFile(at('assets/logo.bin'), bytes(48 * 1024, 2));
  // sparse: data at both ends, a hole of 30 MiB between
  const fh = await fsp.open(at('assets/disk.raw'), 'w');
  await fh.write(bytes(64 * 1024, 3), 0, 64 * 1024, 0);
  await fh.write(bytes(64 * 1024, 4), 0, 64 * 1024, 30 * MiB);
  await fh.close();
  await fsp.writeFile(at('docs/guide.txt'), 'Read me first.\n'.repeat(200));
  await fsp.symlink('guide.txt', at('docs/latest'));
  await fsp.link(at('docs/guide.txt'), at('docs/guide-hardlink.txt'));
  await fsp.chmod(at('src/main.ts'), 0o755);
  const { execFileSync } = await import('node:child_process');
  try { execFileSync('mkfifo', [at('docs/pipe')]); } catch { /* no mkfifo on this host: the example goes without */ }
  try { execFileSync('setfattr', ['-n', 'user.origin', '-v', 'tsbtrfs demo', at('README.md')]); } catch { /* no setfattr: no xattr */ }
  // times with nanoseconds, some before 1970
  await fsp.utimes(at('docs/guide.txt'), new Date('1969-07-20T20:17:40.123Z'), new Date('1969-07-20T20:17:40.123Z'));
}

/** A digest of one tree as the library reads it: what must survive send and receive. */
async function digest(fs: Filesystem, root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const inodes = new Map<string, string>();
  const visit = async (r: Resolved, rel: string): Promise<void> => {
    const st = fs.stats(r);
    const xattrs = (await fs.xattrs(r)).map((x) => `${x.name}=${x.value.toString('hex')}`).sort().join(',');
    let content = '';
    if (st.isFile()) content = createHash('sha256').update(await fs.readFile(r.path) as Buffer).digest('hex').slice(0, 16);
    else if (st.isSymbolicLink()) content = await fs.readlink(r.path);
    const link = st.isFile() && st.nlink > 1 ? (inodes.get(String(st.ino)) ?? (inodes.set(String(st.ino), rel), rel)) : '';
    out.set(rel || '/', [st.mode.toString(8), st.uid, st.gid, st.isDirectory() ? '' : st.size, st.mtimeNs, content, xattrs, link].join(' '));
    if (st.isDirectory()) {
      for (const name of await fs.readdir(r.path)) await visit(await fs.resolve(`${r.path}/${name}`), `${rel}/${name}`);
    }
  };
  await visit(await fs.resolve(root), '');
  return out;
}

async function timed<T>(label: string, fn: () => Promise<T>, detail: (v: T) => string): Promise<T> {
  const t0 = performance.now();
  const v = await fn();
  console.log(`  ${label.padEnd(44)} ${((performance.now() - t0) / 1000).toFixed(2).padStart(6)} s   ${detail(v)}`);
  return v;
}

async function main(): Promise<void> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-demo-'));
  const t0 = performance.now();
  const source = path.join(work, 'source.img');
  const backup = path.join(work, 'backup.img');
  const example = path.join(work, 'example');
  try {
    console.log(`tsbtrfs demo in ${work}\n`);
    await writeExample(example);

    await timed('mkfs source.img (256 MiB)', () => mkfs(source, { size: 256 * MiB, label: 'source' }), (r) => `uuid ${r.fsid}`);
    let fs = await WritableFilesystem.open(source);
    try {
      await timed('subvolume create /data, import the example', async () => {
        await fs.createSubvolume('/data');
        await fs.mkdir('/snapshots');
        return importTree(fs, (await fsp.readdir(example)).map((n) => path.join(example, n)), '/data');
      }, (r) => `${r.files} files, ${r.dirs} directories, ${mib(r.bytes)}`);
      await timed('snapshot -r /data /snapshots/v1', () => fs.snapshot('/data', '/snapshots/v1', { readonly: true }), (id) => `subvolume ${id}`);
      await timed('change files in /data', async () => {
        await fs.appendFile('/data/README.md', '\nChanged after v1.\n');
        await fs.rename('/data/src/lib', '/data/src/library');
        await fs.unlink('/data/src/library/module7.ts');
        await fs.writeFile('/data/src/new.ts', 'export const added = true;\n');
        await fs.chmod('/data/docs/guide.txt', 0o600);
        await fs.setxattr('/data/docs', 'user.reviewed', 'yes');
        await fs.write('/data/assets/texture.bin', bytes(4096, 9), 1 * MiB);
        await fs.writeFile('/data/assets/texture-copy.bin', '');
        await fs.clone('/data/assets/texture.bin', '/data/assets/texture-copy.bin');
        return 9;
      }, (n) => `${n} changes: edit, rename a directory, delete, add, chmod, xattr, overwrite 4 KiB, reflink copy`);
      await timed('snapshot -r /data /snapshots/v2', () => fs.snapshot('/data', '/snapshots/v2', { readonly: true }), (id) => `subvolume ${id}`);
    } finally {
      await fs.close();
    }

    const full = path.join(work, 'v1.full.stream');
    const incr = path.join(work, 'v2.incremental.stream');
    const src = await Filesystem.open(source);
    try {
      const ids = new Map((await src.listSubvolumes()).map((s) => [s.path, s.id]));
      const v1 = ids.get('/snapshots/v1')!;
      const v2 = ids.get('/snapshots/v2')!;
      await timed('send /snapshots/v1 (full)', () => send(src, { snapshot: v1, out: createWriteStream(full) }), (s) => `${mib(s.bytes)} stream, ${s.commands} commands`);
      await timed('send -p v1 /snapshots/v2 (incremental)', () => send(src, { snapshot: v2, parent: v1, out: createWriteStream(incr) }), (s) => `${mib(s.bytes)} stream, ${s.commands} commands`);
    } finally {
      await src.close();
    }

    await timed('mkfs backup.img (256 MiB)', () => mkfs(backup, { size: 256 * MiB, label: 'backup' }), (r) => `uuid ${r.fsid}`);
    fs = await WritableFilesystem.open(backup);
    try {
      await fs.mkdir('/received');
      await timed('receive the full stream into /received', () => receive(fs, '/received', createReadStream(full)),
        (r) => r.map((s) => `${s.name}: subvolume ${s.id}, ${mib(s.bytesWritten)} written`).join('; '));
      await timed('receive the incremental stream', () => receive(fs, '/received', createReadStream(incr)),
        (r) => r.map((s) => `${s.name}: snapshot of ${s.parent}, ${mib(s.bytesWritten)} written, ${mib(s.bytesCloned)} cloned`).join('; '));
    } finally {
      await fs.close();
    }

    for (const img of [source, backup]) {
      await timed(`check ${path.basename(img)}`, () => checkImage(img), (r) => {
        if (!r.clean) throw new Error(`${path.basename(img)}: ${r.errors} errors found by check`);
        return `clean (${r.stats.treeBlocks} tree blocks)`;
      });
    }

    const a = await Filesystem.open(source);
    const b = await Filesystem.open(backup);
    try {
      for (const v of ['v1', 'v2']) {
        await timed(`compare /snapshots/${v} with /received/${v}`, async () => {
          const x = await digest(a, `/snapshots/${v}`);
          const y = await digest(b, `/received/${v}`);
          const diff = [...new Set([...x.keys(), ...y.keys()])].filter((k) => x.get(k) !== y.get(k));
          if (diff.length) throw new Error(`received ${v} differs at ${diff.slice(0, 5).join(', ')}`);
          return x.size;
        }, (n) => `${n} entries identical (content, mode, owner, ns mtime, xattrs, links)`);
      }
      const subs = (await b.listSubvolumes()).filter((s) => s.id !== 5n);
      console.log('\nbackup.img subvolumes:');
      for (const s of subs) console.log(`  ${s.path.padEnd(16)} id ${s.id}  ${s.readOnly ? 'ro' : 'rw'}  received_uuid ${s.receivedUuid}`);
    } finally {
      await a.close();
      await b.close();
    }
    const sizes = await Promise.all([source, backup, full, incr].map(async (f) => `${path.basename(f)} ${mib((await fsp.stat(f)).blocks * 512)}`));
    console.log(`\non disk: ${sizes.join(', ')}`);
    console.log(`done in ${((performance.now() - t0) / 1000).toFixed(2)} s${clean ? '' : `; the images are in ${work} (try: sudo mount -o loop,ro ${backup} /mnt)`}`);
  } finally {
    await fsp.rm(example, { recursive: true, force: true });
    if (clean) await fsp.rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
