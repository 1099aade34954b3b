/** btrfs_disk_key as a buffer-layout codec, for keys nested in other structs. */
import { struct, u8, u64 } from './layout.js';
import type { Key } from './key.js';

export const keyCodec = struct<Key>('disk_key', [u64('objectid'), u8('type'), u64('offset')]);
