/** Shared CLI plumbing: opening images, error reporting, output. */
import { Filesystem, BtrfsError } from '../index.js';

export async function withImage<T>(image: string, fn: (fs: Filesystem) => Promise<T>): Promise<T> {
  const fs = await Filesystem.open(image, { readOnly: true });
  if (fs.info.logRoot) {
    process.stderr.write('tsbtrfs: warning: the image has an unreplayed log tree (changes fsynced after its last commit); ' +
      'showing the last committed state, which is not what a kernel mount (which replays the log) would show\n');
  }
  try {
    return await fn(fs);
  } finally {
    await fs.close();
  }
}

/** Writes to stdout honouring backpressure, and stops quietly if the reader went away (e.g. `| head`). */
export function write(s: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (process.stdout.write(s)) resolve();
    else process.stdout.once('drain', resolve);
    process.stdout.once('error', reject);
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
