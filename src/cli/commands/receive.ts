/**
 * `tsbtrfs receive --dump [-f FILE]`: print a send stream's commands exactly
 * as `btrfs receive --dump` does. The stream comes from FILE or stdin.
 *
 * Receiving into an image (a destination argument instead of --dump) is the
 * next mode: it gets its own `run*` function next to runDump, chosen in the
 * action below, and shares openStream.
 */
import { createReadStream } from 'node:fs';
import { Option, type Command } from 'commander';
import { BtrfsError, dumpSendStream, type DumpSink } from '../../index.js';
import { fail } from '../util.js';

export interface ReceiveCliOptions {
  dump?: boolean;
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

export function register(program: Command): void {
  program
    .command('receive')
    .description('read a btrfs send stream (from -f FILE or stdin); with --dump, print its commands like `btrfs receive --dump`')
    .argument('[destination]', 'where to receive the subvolume (not available yet: use --dump)')
    .option('--dump', 'print the commands of the stream instead of applying them, one per line, as btrfs receive --dump does')
    .option('-f, --file <file>', 'read the stream from FILE instead of stdin')
    .addOption(new Option('--max-command-size <bytes>', 'refuse commands larger than this (default 16 MiB)'))
    .addHelpText('after', '\nTimes print in the local time zone with whole seconds, like btrfs-progs; set TZ=UTC to compare dumps.')
    .action(async (destination: string | undefined, opts: ReceiveCliOptions, cmd: Command) => {
      if (opts.dump) {
        if (destination !== undefined) cmd.error('error: --dump takes no destination', { exitCode: 2 });
        try {
          await runDump(opts);
        } catch (e) {
          fail(e);
        }
        return;
      }
      if (destination === undefined) cmd.error('error: missing destination (or --dump)', { exitCode: 2 });
      cmd.error('error: receiving into an image is not implemented yet; use --dump to print the stream', { exitCode: 2 });
    });
}
