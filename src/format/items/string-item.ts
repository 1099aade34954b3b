/**
 * STRING_ITEM (key type 253): free-form bytes, used by debugging tools and
 * tests; the item's size is the string's length (no terminator).
 */
export function decodeStringItem(b: Buffer): Buffer { return Buffer.from(b); }
export function encodeStringItem(s: Buffer | string): Buffer { return Buffer.from(s); }
