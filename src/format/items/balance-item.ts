/**
 * The balance item, TEMPORARY_ITEM with objectid BALANCE (-4) in the root
 * tree, key (BALANCE TEMPORARY_ITEM 0): a paused or interrupted balance.
 *   0 flags u64 | 8 data args[136] | 144 meta args[136] | 280 sys args[136] | 416 unused[4] u64   = 448
 * balance args (136):
 *   0 profiles u64 | 8 usage u64 (or usage_min u32, usage_max u32) | 16 devid u64
 *  24 pstart u64 | 32 pend u64 | 40 vstart u64 | 48 vend u64 | 56 target u64 | 64 flags u64
 *  72 limit u64 (or limit_min u32, limit_max u32) | 80 stripes_min u32 | 84 stripes_max u32 | 88 unused[6] u64
 */
import { struct, u32, u64, bytes, nested } from '../layout.js';

export interface BalanceArgs {
  profiles: bigint;
  usage_min: number;
  usage_max: number;
  devid: bigint;
  pstart: bigint;
  pend: bigint;
  vstart: bigint;
  vend: bigint;
  target: bigint;
  flags: bigint;
  limit_min: number;
  limit_max: number;
  stripes_min: number;
  stripes_max: number;
  unused: Buffer;
}

export interface BalanceItem {
  flags: bigint;
  data: BalanceArgs;
  meta: BalanceArgs;
  sys: BalanceArgs;
  unused: Buffer;
}

// The unions (usage, limit) are decoded as their two u32 halves; the u64
// reading is usage_min + usage_max * 2^32, see balanceUsage().
export const balanceArgsCodec = struct<BalanceArgs>('balance_args', [
  u64('profiles'), u32('usage_min'), u32('usage_max'), u64('devid'), u64('pstart'), u64('pend'),
  u64('vstart'), u64('vend'), u64('target'), u64('flags'), u32('limit_min'), u32('limit_max'),
  u32('stripes_min'), u32('stripes_max'), bytes(48, 'unused'),
]);

export const balanceItemCodec = struct<BalanceItem>('balance_item', [
  u64('flags'), nested(balanceArgsCodec, 'data'), nested(balanceArgsCodec, 'meta'), nested(balanceArgsCodec, 'sys'),
  bytes(32, 'unused'),
]);
export const BALANCE_ITEM_SIZE = balanceItemCodec.size;

export function balanceUsage(a: BalanceArgs): bigint { return BigInt(a.usage_min) | (BigInt(a.usage_max) << 32n); }
export function balanceLimit(a: BalanceArgs): bigint { return BigInt(a.limit_min) | (BigInt(a.limit_max) << 32n); }

export function decodeBalanceItem(b: Buffer): BalanceItem { return balanceItemCodec.decode(b, 0); }
export function encodeBalanceItem(v: BalanceItem): Buffer { return balanceItemCodec.toBuffer(v); }
