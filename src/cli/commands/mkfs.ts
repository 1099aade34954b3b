/** `tsbtrfs mkfs IMAGE`: a new, empty btrfs, like mkfs.btrfs with its defaults; prints the same summary. */
import fsp from 'node:fs/promises';
import { Progress } from '../progress.js';
import { Option, type Command } from 'commander';
import { mkfs, BtrfsError, WritableFilesystem, importTree, type MkfsCsum, type MkfsResult, type MetadataProfile } from '../../index.js';
import { write } from '../util.js';

const UNITS = ['', 'K', 'M', 'G', 'T', 'P', 'E'];

/** A byte count with an optional binary suffix, as mkfs.btrfs takes it: 512M, 20G, 1t, 4096. */
export function parseSize(v: string): number {
  const m = /^(\d+)\s*([kmgtpe]?)(i?b)?$/i.exec(v.trim());
  if (!m) throw new BtrfsError('EINVAL', `size '${v}' is not a number with an optional K, M, G, T, P or E suffix`);
  const n = BigInt(m[1]!) * 1024n ** BigInt(UNITS.indexOf(m[2]!.toUpperCase()));
  if (n === 0n || n > BigInt(Number.MAX_SAFE_INTEGER)) throw new BtrfsError('EINVAL', `size '${v}' is out of range`);
  return Number(n);
}

/** Bytes as mkfs.btrfs prints them: 512.00MiB. */
function prettySize(bytes: number): string {
  const names = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < names.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes}B` : `${v.toFixed(2)}${names[i]}`;
}

function summary(r: MkfsResult): string {
  const pad = (s: string) => s.padEnd(20);
  const groups = (['data', 'metadata', 'system'] as const).map((kind) => {
    const g = r.blockGroups.find((b) => b.kind === kind)!;
    const name = `${kind[0]!.toUpperCase()}${kind.slice(1)}:`;
    return `  ${name.padEnd(18)}${g.profile.padEnd(12)}${prettySize(g.length).padStart(12)}`;
  });
  return [
    `${pad('Label:')}${r.label === '' ? '(null)' : r.label}`,
    `${pad('UUID:')}${r.fsid}`,
    `${pad('Node size:')}${r.nodesize}`,
    `${pad('Sector size:')}${r.sectorsize}`,
    `${pad('Filesystem size:')}${prettySize(r.totalBytes)}`,
    'Block group profiles:',
    ...groups,
    `${pad('Incompat features:')}extref, skinny-metadata, no-holes`,
    `${pad('Runtime features:')}free-space-tree`,
    `${pad('Checksum:')}${r.csum}`,
    `${pad('Number of devices:')}1`,
    'Devices:',
    '   ID        SIZE  PATH',
    `${'1'.padStart(5)}  ${prettySize(r.totalBytes).padStart(10)}  ${r.device}`,
    '',
  ].join('\n');
}

interface MkfsCliOptions {
  size?: string;
  label?: string;
  nodesize?: string;
  csum?: MkfsCsum;
  metadata?: MetadataProfile;
  uuid?: string;
  force?: boolean;
}

export function register(program: Command): void {
  program
    .command('mkfs')
    .description('make a new, empty btrfs on an image file or block device (the defaults of mkfs.btrfs 6.2: 16 KiB nodes, DUP metadata, single data, free space tree)')
    .argument('<image>', 'image file (created when missing, given --size) or block device')
    .option('-s, --size <size>', 'filesystem size in bytes, suffixes K M G T (binary); grows a shorter image file')
    .option('-L, --label <label>', 'filesystem label, at most 255 bytes')
    .option('-n, --nodesize <bytes>', 'tree block size, a power of two from 4096 to 65536', '16384')
    .addOption(new Option('--csum <type>', 'checksum algorithm').choices(['crc32c', 'xxhash', 'sha256', 'blake2']).default('crc32c'))
    .addOption(new Option('-m, --metadata <profile>', 'metadata profile').choices(['single', 'dup']).default('dup'))
    .option('-U, --uuid <uuid>', 'filesystem uuid (default: random)')
    .option('-f, --force', 'overwrite an existing filesystem or partition table')
    .option('-r, --rootdir <dir>', 'fill the new filesystem with a copy of DIR (its own mode, owner and times go to the root directory)')
    .action(async (image: string, o: MkfsCliOptions & { rootdir?: string }) => {
      const nodesize = o.nodesize === undefined ? undefined : parseSize(o.nodesize);
      let size = o.size !== undefined ? parseSize(o.size) : undefined;
      if (o.rootdir !== undefined && size === undefined && !(await fileExists(image))) size = await sizeFor(o.rootdir);
      const r = await mkfs(image, {
        ...(size !== undefined ? { size } : {}),
        ...(o.label !== undefined ? { label: o.label } : {}),
        ...(nodesize !== undefined ? { nodesize } : {}),
        ...(o.csum !== undefined ? { csum: o.csum } : {}),
        ...(o.metadata !== undefined ? { metadataProfile: o.metadata } : {}),
        ...(o.uuid !== undefined ? { fsUuid: o.uuid } : {}),
        force: o.force ?? false,
      });
      await write(summary(r));
      if (o.rootdir !== undefined) {
        const fs = await WritableFilesystem.open(image);
        const bar = Progress.start('import');
        try {
          const res = await importTree(fs, [o.rootdir], '/', { contentsOnly: true, onProgress: (p) => bar?.update(p.files, p.bytes) });
          await fs.close();
          bar?.stop();
          for (const w of res.warnings) process.stderr.write(`tsbtrfs: warning: ${w}\n`);
          await write(`Rootdir from:       ${o.rootdir} (${res.files} files, ${res.dirs} directories, ${res.bytes} bytes)\n`);
        } catch (e) {
          bar?.stop();
          await fs.abort().catch(() => undefined);
          await fs.close().catch(() => undefined);
          throw e;
        }
      }
    });
}

async function fileExists(p: string): Promise<boolean> {
  return fsp.stat(p).then(() => true, () => false);
}

/** Room for a directory's data and metadata, as mkfs.btrfs --rootdir sizes an image it creates. */
async function sizeFor(dir: string): Promise<number> {
  let bytes = 0;
  let entries = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      entries++;
      const p = `${d}/${e.name}`;
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) bytes += Math.ceil((await fsp.stat(p)).size / 4096) * 4096;
    }
  };
  await walk(dir);
  const mib = 1024 * 1024;
  return Math.ceil((bytes * 1.1 + entries * 2048 * 2 + 256 * mib) / mib) * mib;
}
