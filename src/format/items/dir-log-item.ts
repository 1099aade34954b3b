/**
 * DIR_LOG_ITEM / DIR_LOG_INDEX (log trees only, key (dir DIR_LOG_* start)):
 * the range [start, end] of directory keys the log covers.
 *   0 end u64   = 8
 */
import { struct, u64 } from '../layout.js';

export interface DirLogItem { end: bigint }

export const dirLogItemCodec = struct<DirLogItem>('dir_log_item', [u64('end')]);
export const DIR_LOG_ITEM_SIZE = dirLogItemCodec.size;

export function decodeDirLogItem(b: Buffer): DirLogItem { return dirLogItemCodec.decode(b, 0); }
export function encodeDirLogItem(v: DirLogItem): Buffer { return dirLogItemCodec.toBuffer(v); }
