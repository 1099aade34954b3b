/**
 * Struct codecs on top of buffer-layout. buffer-layout has no 64-bit integer
 * that keeps full precision (its nu64 is a lossy JS number), so u64/s64 are
 * added here as bigint layouts; everything else is buffer-layout's own.
 *
 * A Codec is a fixed-size struct: decode() checks bounds first so a short
 * or truncated item becomes EUCLEAN, never a RangeError.
 */
import BL, { type Layout } from 'buffer-layout';
import { needBytes } from '../util/bytes.js';

class U64Layout extends BL.Layout<bigint> {
  constructor(property?: string) { super(8, property); }
  override decode(b: Buffer, offset = 0): bigint { return b.readBigUInt64LE(offset); }
  override encode(src: bigint, b: Buffer, offset = 0): number {
    b.writeBigUInt64LE(BigInt.asUintN(64, src), offset);
    return 8;
  }
}

class S64Layout extends BL.Layout<bigint> {
  constructor(property?: string) { super(8, property); }
  override decode(b: Buffer, offset = 0): bigint { return b.readBigInt64LE(offset); }
  override encode(src: bigint, b: Buffer, offset = 0): number {
    b.writeBigInt64LE(BigInt.asIntN(64, src), offset);
    return 8;
  }
}

/** A fixed-length byte field that decodes to its own copy (blocks are shared, values must not alias them). */
class BytesLayout extends BL.Layout<Buffer> {
  constructor(len: number, property?: string) { super(len, property); }
  override decode(b: Buffer, offset = 0): Buffer { return Buffer.from(b.subarray(offset, offset + this.span)); }
  override encode(src: Buffer, b: Buffer, offset = 0): number {
    b.fill(0, offset, offset + this.span);
    Buffer.from(src).copy(b, offset, 0, Math.min(src.length, this.span));
    return this.span;
  }
}

export const u8 = (p: string) => BL.u8(p);
export const u16 = (p: string) => BL.u16(p);
export const u32 = (p: string) => BL.u32(p);
export const u64 = (p: string): Layout<bigint> => new U64Layout(p);
export const s64 = (p: string): Layout<bigint> => new S64Layout(p);
export const bytes = (len: number, p: string): Layout<Buffer> => new BytesLayout(len, p);

/** btrfs_timespec: le64 sec, le32 nsec. */
export interface Timespec { sec: bigint; nsec: number }
export const timespec = (p: string) => BL.struct<Timespec>([s64('sec'), u32('nsec')], p);

export interface Codec<T> {
  readonly name: string;
  readonly size: number;
  decode(b: Buffer, offset?: number): T;
  encode(value: T, b: Buffer, offset?: number): void;
  /** a fresh zeroed buffer holding the encoded value */
  toBuffer(value: T): Buffer;
}

/** A fixed-size little-endian struct codec named for error messages. */
export function struct<T>(name: string, fields: Layout[]): Codec<T> {
  const layout = BL.struct<T>(fields, name);
  const size = layout.span;
  return {
    name,
    size,
    decode(b: Buffer, offset = 0): T {
      needBytes(b, offset, size, name);
      return layout.decode(b, offset);
    },
    encode(value: T, b: Buffer, offset = 0): void {
      layout.encode(value, b, offset);
    },
    toBuffer(value: T): Buffer {
      const out = Buffer.alloc(size);
      layout.encode(value, out, 0);
      return out;
    },
  };
}

/** A nested struct field (for structs inside structs, e.g. a key inside an item). */
export function nested<T>(codec: Codec<T>, p: string): Layout<T> {
  const inner = new (class extends BL.Layout<T> {
    constructor() { super(codec.size, p); }
    override decode(b: Buffer, offset = 0): T { return codec.decode(b, offset); }
    override encode(src: T, b: Buffer, offset = 0): number { codec.encode(src, b, offset); return codec.size; }
  })();
  return inner;
}
