/**
 * fs-verity items of a file (fs trees):
 *   VERITY_DESC_ITEM   key (ino VERITY_DESC_ITEM 0): 0 size u64 (of the descriptor) | 8 reserved[2] u64
 *                      | 24 encryption u8 ; at offsets > 0 the descriptor bytes themselves
 *   VERITY_MERKLE_ITEM key (ino VERITY_MERKLE_ITEM offset): Merkle tree bytes
 * Kept raw: nothing in tsbtrfs interprets them beyond copying.
 */
export function decodeVerityItem(b: Buffer): Buffer { return Buffer.from(b); }
export function encodeVerityItem(b: Buffer): Buffer { return Buffer.from(b); }
