/** Shared CLI plumbing: opening images, error reporting, output. */
// Only the error type at load time: `check` uses this module and loads nothing else of the library.
import { BtrfsError } from '../util/errors.js';
import type { Filesystem } from '../fs/filesystem.js';

export async function withImage<T>(image: string, fn: (fs: Filesystem) => Promise<T>): Promise<T> {
  const { Filesystem } = await import('../fs/filesystem.js');
  const fs = await Filesystem.open(image, { readOnly: true });
  if (fs.info.logRoot) {
    process.stderr.write('tsbtrfs: warning: the image has an unreplayed log tree (changes fsynced after its last commit); ' +
      'showing the last committed state, which is not what a kernel mount (which replays the log) would show\n');
  }
  // one member of a multi-device filesystem, read degraded: say so, as btrfs-progs does
  for (const devid of fs.info.missingDevices) process.stderr.write(`tsbtrfs: warning: device ${devid} is missing; what only it holds cannot be read\n`);
  try {
    return await fn(fs);
  } finally {
    await fs.close();
  }
}

/** Writes to stdout honouring backpressure, and stops quietly if the reader went away (e.g. `| head`). */
export function write(s: string | Buffer): Promise<void> {
  if (process.stdout.write(s)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    // listeners only while waiting, so thousands of writes leave none behind
    const done = (e?: Error): void => {
      process.stdout.off('drain', onDrain);
      process.stdout.off('error', done);
      if (e) reject(e);
      else resolve();
    };
    const onDrain = (): void => done();
    process.stdout.once('drain', onDrain);
    process.stdout.once('error', done);
  });
}

export function fail(e: unknown): never {
  if (e instanceof BtrfsError) {
    process.stderr.write(`tsbtrfs: ${e.message}\n`);
  } else if (e && typeof e === 'object' && 'code' in e && 'message' in e) {
    process.stderr.write(`tsbtrfs: ${String((e as unknown as Error).message)}\n`);
  } else {
    process.stderr.write(`tsbtrfs: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
  }
  process.exit(1);
}

export function parseBigInt(v: string, what: string): bigint {
  if (!/^-?\d+$/.test(v)) throw new BtrfsError('EINVAL', `${what} must be a number, got '${v}'`);
  return BigInt.asUintN(64, BigInt(v));
}
