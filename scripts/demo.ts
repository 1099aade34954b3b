/**
 * `npm run demo`: the main job on a built-in example. Opens a bundled image
 * made by the real kernel (subvolumes, nested subvolumes, snapshots, a
 * received subvolume), lists its subvolumes, reads a file, extracts the whole
 * tree to a temporary directory and prints a summary. Needs no root and no
 * kernel mount.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';
import { createReadStream } from 'node:fs';
import { Filesystem, extract } from '../src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const FIXTURE = 'subvols-snapshots-default-received';

/** Gunzips the bundled image into a sparse file (all-zero blocks are skipped, not written). */
async function unpack(gz: string, dest: string): Promise<number> {
  const fh = await fsp.open(dest, 'w');
  let pos = 0;
  try {
    for await (const chunk of createReadStream(gz).pipe(createGunzip()) as AsyncIterable<Buffer>) {
      for (let off = 0; off < chunk.length; off += 65536) {
        const piece = chunk.subarray(off, off + 65536);
        if (piece.some((b) => b !== 0)) await fh.write(piece, 0, piece.length, pos + off);
      }
      pos += chunk.length;
    }
    await fh.truncate(pos);
  } finally {
    await fh.close();
  }
  return pos;
}

async function main(): Promise<void> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-demo-'));
  const t0 = performance.now();
  try {
    const img = path.join(work, `${FIXTURE}.img`);
    const size = await unpack(path.join(repo, 'native-fixtures', `${FIXTURE}.img.gz`), img);
    console.log(`image: ${img} (${(size / 1048576).toFixed(0)} MiB, made by mkfs.btrfs and the Linux kernel)`);

    const fs = await Filesystem.open(img, { readOnly: true });
    try {
      console.log(`label: '${fs.label}', nodesize ${fs.info.nodesize}, sectorsize ${fs.info.sectorsize}, generation ${fs.info.sb.generation}`);
      console.log('\nsubvolumes:');
      const subs = await fs.listSubvolumes();
      const byUuid = new Map(subs.map((s) => [s.uuid, s.path.replace(/^\//, '')]));
      const name = (u: string) => byUuid.get(u) ?? `${u.slice(0, 8)} (not in this image)`;
      for (const s of subs) {
        if (s.id === 5n) continue;
        const flags = [s.readOnly ? 'ro' : 'rw', s.parentUuid ? `snapshot of ${name(s.parentUuid)}` : '', s.receivedUuid ? `received as ${s.receivedUuid.slice(0, 8)}` : '']
          .filter(Boolean).join(', ');
        console.log(`  ID ${String(s.id).padEnd(4)} gen ${String(s.generation).padEnd(4)} top level ${String(s.parentId).padEnd(4)} ${(s.path.replace(/^\//, '') || '/').padEnd(28)} ${flags}`);
      }
      console.log(`default subvolume: ${await fs.getDefaultSubvolume()}`);
      console.log(`\n/ contains: ${(await fs.readdir('/')).join(', ')}`);

      const dest = path.join(work, 'extracted');
      const res = await extract(fs, '/', dest, { onWarning: () => undefined });
      console.log(`\nextracted to ${dest}: ${res.files} files, ${res.dirs} directories, ${res.hardlinks} hard links, ${res.bytes} bytes of data`);
      if (res.warnings.length) console.log(`(${res.warnings.length} things the host refused without root, e.g. device nodes)`);
    } finally {
      await fs.close();
    }
    console.log(`done in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
