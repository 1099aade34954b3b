/**
 * Output and failure for every command. It imports nothing of the library,
 * so that a command that loads only one layer (check) stays light.
 */
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
  // A BtrfsError, or a system error of Node's: both carry a code and say what failed.
  if (e && typeof e === 'object' && 'code' in e && 'message' in e) {
    process.stderr.write(`tsbtrfs: ${String((e as unknown as Error).message)}\n`);
  } else {
    process.stderr.write(`tsbtrfs: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
  }
  process.exit(1);
}
