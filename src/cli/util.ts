/** Shared CLI plumbing: opening images, error reporting, output. */
import { BtrfsError, Filesystem } from '../index.js';

export async function withImage<T>(image: string, fn: (fs: Filesystem) => Promise<T>): Promise<T> {
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

/**
 * How long a changing command waits for another process's hold on the image
 * before EBUSY: a send of another process holds the lock for a moment to
 * register itself, and a delete arriving then should see the send (EPERM,
 * as the kernel answers) rather than the lock. A writer that keeps the image
 * longer still gets EBUSY, a little later. TSBTRFS_LOCK_WAIT_MS overrides.
 */
export function lockWaitMs(): number {
  const v = Number(process.env.TSBTRFS_LOCK_WAIT_MS);
  return Number.isFinite(v) && v >= 0 ? v : 2000;
}

export { write, fail } from './output.js';

export function parseBigInt(v: string, what: string): bigint {
  if (!/^-?\d+$/.test(v)) throw new BtrfsError('EINVAL', `${what} must be a number, got '${v}'`);
  return BigInt.asUintN(64, BigInt(v));
}
