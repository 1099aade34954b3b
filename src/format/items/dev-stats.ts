/**
 * Device statistics, PERSISTENT_ITEM with objectid DEV_STATS (0) in the dev
 * tree, key (DEV_STATS PERSISTENT_ITEM devid): an array of u64 counters in
 * DEV_STAT_NAMES order (write, read, flush, corruption, generation errors);
 * a newer kernel may append more, an older one write fewer.
 */
import { corrupt } from '../../util/errors.js';

export function decodeDevStats(b: Buffer): bigint[] {
  if (b.length % 8 !== 0) throw corrupt(`dev_stats item of ${b.length} bytes is not a multiple of 8`);
  const out: bigint[] = [];
  for (let off = 0; off < b.length; off += 8) out.push(b.readBigUInt64LE(off));
  return out;
}

export function encodeDevStats(values: bigint[]): Buffer {
  const out = Buffer.alloc(values.length * 8);
  values.forEach((v, i) => out.writeBigUInt64LE(BigInt.asUintN(64, v), i * 8));
  return out;
}
