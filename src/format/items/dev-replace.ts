/**
 * DEV_REPLACE (dev tree, key (0 DEV_REPLACE 0)): state of a running or
 * finished `btrfs replace`, kept so it can resume after a remount.
 *   0 src_devid | 8 cursor_left | 16 cursor_right | 24 cont_reading_from_srcdev_mode
 *  32 replace_state | 40 time_started | 48 time_stopped | 56 num_write_errors
 *  64 num_uncorrectable_read_errors   (u64 each)  = 72
 */
import { struct, u64 } from '../layout.js';

export interface DevReplaceItem {
  src_devid: bigint;
  cursor_left: bigint;
  cursor_right: bigint;
  cont_reading_from_srcdev_mode: bigint;
  replace_state: bigint;
  time_started: bigint;
  time_stopped: bigint;
  num_write_errors: bigint;
  num_uncorrectable_read_errors: bigint;
}

export const devReplaceCodec = struct<DevReplaceItem>('dev_replace_item', [
  u64('src_devid'), u64('cursor_left'), u64('cursor_right'), u64('cont_reading_from_srcdev_mode'),
  u64('replace_state'), u64('time_started'), u64('time_stopped'), u64('num_write_errors'),
  u64('num_uncorrectable_read_errors'),
]);
export const DEV_REPLACE_ITEM_SIZE = devReplaceCodec.size;

/** replace_state values */
export const DEV_REPLACE_STATE = { NEVER_STARTED: 0n, STARTED: 1n, FINISHED: 2n, CANCELED: 3n, SUSPENDED: 4n } as const;

export function decodeDevReplace(b: Buffer): DevReplaceItem { return devReplaceCodec.decode(b, 0); }
export function encodeDevReplace(v: DevReplaceItem): Buffer { return devReplaceCodec.toBuffer(v); }
