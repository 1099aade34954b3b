/**
 * The superblock against the trees it summarises. Its own integrity
 * (magic, checksum, field ranges) is proven by opening the filesystem; this
 * pass checks that its copy of the device item and its device count agree
 * with the chunk tree, and that its sizes are sane.
 */
import { OBJ } from '../format/constants.js';
import type { CheckContext } from './context.js';
import { readChunkTree } from './chunks.js';

export async function checkSuperblock(ctx: CheckContext): Promise<void> {
  const { info, report } = ctx;
  const sb = info.sb;
  const ss = BigInt(info.sectorsize);
  // Devices are the DEV_ITEMs under the DEV_ITEMS objectid; one keyed elsewhere names no device.
  const devItems = (await readChunkTree(ctx)).devs.filter((d) => d.key.objectid === OBJ.DEV_ITEMS).map((d) => d.item);
  if (BigInt(devItems.length) !== sb.num_devices) {
    report.error('super-num-devices', `super num devices mismatch, have ${sb.num_devices} expect ${devItems.length}`);
  }
  const dev = devItems.find((d) => d.devid === sb.dev_item.devid);
  if (!dev) {
    report.error('super-dev-item', `the superblock's device ${sb.dev_item.devid} has no DEV_ITEM in the chunk tree`, { tree: OBJ.CHUNK_TREE });
  } else {
    // btrfs check tolerates a stale copy here: the chunk tree's item is the one that counts.
    if (dev.total_bytes !== sb.dev_item.total_bytes || dev.bytes_used !== sb.dev_item.bytes_used) {
      report.warning('super-dev-item', `the superblock's dev item (total ${sb.dev_item.total_bytes}, used ${sb.dev_item.bytes_used}) differs from the chunk tree's (total ${dev.total_bytes}, used ${dev.bytes_used})`, { tree: OBJ.CHUNK_TREE });
    }
    if (!dev.uuid.equals(sb.dev_item.uuid)) {
      report.error('super-dev-item', `the superblock's device uuid differs from the chunk tree's dev item ${dev.devid}`, { tree: OBJ.CHUNK_TREE });
    }
  }
  if (sb.stripesize !== info.sectorsize && sb.stripesize !== 4096) {
    report.error('super-stripesize', `invalid stripesize ${sb.stripesize}`);
  }
  const devSum = devItems.reduce((n, d) => n + d.total_bytes, 0n);
  if (sb.total_bytes < devSum) {
    report.error('super-total-bytes', `super total bytes ${sb.total_bytes} smaller than real device(s) size ${devSum}`);
  }
  for (const d of devItems) {
    if (d.total_bytes % ss !== 0n) report.warning('unaligned-total-bytes', `unaligned total_bytes detected for devid ${d.devid}, have ${d.total_bytes} should be aligned to ${ss}`);
  }
  if (sb.total_bytes % ss !== 0n) report.warning('unaligned-total-bytes', `unaligned total_bytes detected in the superblock, have ${sb.total_bytes} should be aligned to ${ss}`);
}
