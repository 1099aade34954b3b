/**
 * `tsbtrfs receive IMAGE DESTDIR [-f FILE] [-e]`: apply a send stream into
 * an image, each subvolume of it a new read-only subvolume in DESTDIR.
 * `tsbtrfs receive --dump [-f FILE]`: print a send stream's commands exactly
 * as `btrfs receive --dump` does. The stream comes from FILE or stdin.
 */
import { createReadStream } from 'node:fs';
import { Option, type Command } from 'commander';
import { BtrfsError, dumpSendStream, receive, WritableFilesystem, type DumpSink } from '../../index.js';
import { fail, lockWaitMs } from '../util.js';

export interface ReceiveCliOptions {
  dump?: boolean;
  terminate?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  file?: string;
  maxCommandSize?: string;
}

/** The stream's bytes from FILE, or stdin when no file (or '-') is given. */
export function openStream(file: string | undefined): AsyncIterable<Buffer> {
  if (file === undefined || file === '-') return process.stdin;
  return createReadStream(file, { highWaterMark: 256 * 1024 });
}

function parseLimit(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 10 || !Number.isSafeInteger(Number(v))) {
    throw new BtrfsError('EINVAL', `--max-command-size must be a number of bytes >= 10, got '${v}'`);
  }
  return Number(v);
}

/**
 * Writes to stdout with backpressure. (util.write leaves an 'error' listener
 * behind per call, which a long dump would pile up.)
 */
const stdoutSink: DumpSink = (chunk) => new Promise<void>((resolve, reject) => {
  const onError = (e: Error): void => reject(e);
  const done = (): void => {
    process.stdout.off('error', onError);
    resolve();
  };
  process.stdout.once('error', onError);
  if (process.stdout.write(chunk)) done();
  else process.stdout.once('drain', done);
});

async function runDump(opts: ReceiveCliOptions): Promise<void> {
  await dumpSendStream(openStream(opts.file), stdoutSink, {
    maxCommandSize: parseLimit(opts.maxCommandSize),
    onWarning: (m) => process.stderr.write(`tsbtrfs: warning: ${m}\n`),
  });
}

const MiB = 1024 * 1024;

async function runReceive(image: string, dest: string, opts: ReceiveCliOptions): Promise<void> {
  const fs = await WritableFilesystem.open(image, { lockWaitMs: lockWaitMs() });
  try {
    const t0 = performance.now();
    const got = await receive(fs, dest, openStream(opts.file), {
      honorEnd: opts.terminate,
      maxCommandSize: parseLimit(opts.maxCommandSize),
      onLine: opts.quiet ? undefined : (l) => process.stderr.write(`${l}\n`),
    });
    if (opts.verbose) {
      const s = ((performance.now() - t0) / 1000).toFixed(2);
      for (const r of got) {
        process.stderr.write(`received ${r.name}: subvolume ${r.id}${r.parent !== undefined ? ` (snapshot of ${r.parent})` : ''}, ${r.commands} commands, ` +
          `${(r.bytesWritten / MiB).toFixed(1)} MiB written, ${(r.bytesCloned / MiB).toFixed(1)} MiB cloned` +
          `${r.bytesCopied ? `, ${(r.bytesCopied / MiB).toFixed(1)} MiB copied for unshareable clones` : ''}${r.ignored ? `, ${r.ignored} commands with nothing to apply` : ''}\n`);
      }
      process.stderr.write(`${got.length} subvolume(s) in ${s} s\n`);
    }
  } finally {
    await fs.close();
  }
}

export function register(program: Command): void {
  program
    .command('receive')
    .description('apply a btrfs send stream (from -f FILE or stdin) into IMAGE, each subvolume a new read-only one in DESTDIR; with --dump, print its commands like `btrfs receive --dump`')
    .argument('[image]', 'image file or block device to receive into')
    .argument('[destdir]', 'directory in the image where the received subvolumes go')
    .option('-e, --terminate', 'stop after the first END command, as btrfs receive -e')
    .option('-q, --quiet', 'print nothing but errors')
    .option('-v, --verbose', 'print what each received subvolume took')
    .option('--dump', 'print the commands of the stream instead of applying them, one per line, as btrfs receive --dump does')
    .option('-f, --file <file>', 'read the stream from FILE instead of stdin')
    .addOption(new Option('--max-command-size <bytes>', 'refuse commands larger than this (default 16 MiB)'))
    .addHelpText('after', '\nTimes print in the local time zone with whole seconds, like btrfs-progs; set TZ=UTC to compare dumps.')
    .action(async (image: string | undefined, destination: string | undefined, opts: ReceiveCliOptions, cmd: Command) => {
      if (opts.dump) {
        if (image !== undefined) cmd.error('error: --dump takes no image or destination', { exitCode: 2 });
        try {
          await runDump(opts);
        } catch (e) {
          fail(e);
        }
        return;
      }
      if (image === undefined || destination === undefined) cmd.error('error: receive needs IMAGE and DESTDIR (or --dump)', { exitCode: 2 });
      try {
        await runReceive(image, destination, opts);
      } catch (e) {
        fail(e);
      }
    });
}
