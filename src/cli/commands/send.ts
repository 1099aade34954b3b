/**
 * `tsbtrfs send IMAGE SNAPSHOT [-p PARENT] [-c SRC]... [-f FILE] [--no-data] [--proto 1|2]`:
 * a read-only snapshot of an image as a `btrfs receive` stream, like
 * `btrfs send`, read from the image without mounting it. Paths are the
 * subvolumes' paths inside the image, as the other commands resolve them.
 */
import { createWriteStream } from 'node:fs';
import type { Command } from 'commander';
import { BtrfsError, send, type Filesystem } from '../../index.js';
import { fail, withImage } from '../util.js';

interface SendCliOptions {
  parent?: string;
  cloneSrc: string[];
  file?: string;
  data: boolean;
  proto: string;
  quiet?: boolean;
}

/** The id of the subvolume whose top directory `path` is. */
async function subvolumeAt(fs: Filesystem, path: string): Promise<bigint> {
  const r = await fs.resolve(path, true);
  if (r.placeholder || r.ino !== 256n) {
    throw new BtrfsError('EINVAL', 'not a subvolume', { path });
  }
  return r.subvol;
}

function parseProto(v: string): 1 | 2 {
  // btrfs-progs reads 0 as "the highest this kernel offers"
  if (v === '0' || v === '2') return 2;
  if (v === '1') return 1;
  throw new BtrfsError('EINVAL', `--proto must be 0, 1 or 2, got '${v}'`);
}

export function register(program: Command): void {
  program
    .command('send')
    .description('write a read-only snapshot as a send stream (full, or incremental with -p), like btrfs send')
    .argument('<image>', 'filesystem image')
    .argument('<snapshot>', 'path of the read-only snapshot inside the image')
    .option('-p, --parent <path>', 'send only the difference from this read-only snapshot, which the receiver has')
    .option('-c, --clone-src <path>', 'a read-only snapshot the receiver has, whose data may be cloned (repeatable)',
      (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('-f, --file <file>', 'write the stream to FILE instead of stdout')
    .option('--no-data', 'send no file data, only which ranges changed (UPDATE_EXTENT)')
    .option('--proto <n>', 'stream protocol version: 1, 2, or 0 for the highest', '1')
    .action(async (image: string, snapshot: string, opts: SendCliOptions) => {
      try {
        const proto = parseProto(opts.proto);
        if (!opts.file && process.stdout.isTTY) {
          throw new BtrfsError('EINVAL', 'not writing a send stream to a terminal: redirect it or use -f FILE');
        }
        await withImage(image, async (fs) => {
          const id = await subvolumeAt(fs, snapshot);
          const parent = opts.parent !== undefined ? await subvolumeAt(fs, opts.parent) : undefined;
          const clones: bigint[] = [];
          for (const c of opts.cloneSrc) clones.push(await subvolumeAt(fs, c));
          const out = opts.file ? createWriteStream(opts.file) : process.stdout;
          await send(fs, {
            snapshot: id, parent, cloneSources: clones, out, proto, noData: !opts.data, imagePath: image,
            end: opts.file !== undefined,
          });
        });
      } catch (e) {
        fail(e);
      }
    });
}
