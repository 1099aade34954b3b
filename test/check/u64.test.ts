/**
 * The check's number helpers (src/check/u64.ts): u64 fields read as exact
 * numbers or bigints, and byte addresses turned into map keys that never
 * collide, aligned or not, small or past 2^53.
 */
import { expect } from 'chai';
import { addrKey, addU64, keyAddr, readBig, readU64, type AddrKey } from '../../src/check/u64.js';

describe('check: u64 helpers', () => {
  it('reads u64 fields exactly: a number below 2^53, a bigint from there', () => {
    const b = Buffer.alloc(40);
    const values = [0n, 1n, 4095n, 4096n, 2n ** 32n + 5n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n];
    for (const v of values) {
      b.writeBigUInt64LE(v, 3);
      const r = readU64(b, 3);
      expect(typeof r).to.equal(v < 2n ** 53n ? 'number' : 'bigint');
      expect(BigInt(r)).to.equal(v);
      expect(readBig(b, 3)).to.equal(v);
    }
    expect(() => readU64(b, 36)).to.throw(RangeError);
    expect(addU64(2 ** 53 - 1, 1)).to.equal(2n ** 53n);
    expect(addU64(2n ** 64n - 1n, 2)).to.equal(1);
  });

  it('gives every address its own map key, and the key gives the address back', () => {
    const addrs = [0, 4096, 4097, 8192, 30408704, 2 ** 42 - 4096, 2 ** 42, 2 ** 42 + 4096, 2 ** 53 - 1, 2n ** 53n, 2n ** 64n - 4096n];
    // An unaligned address whose value equals another's scaled key must not share it.
    addrs.push(7, 7 * 4096, 1000001, 1000001 * 4096);
    const keys = new Map<AddrKey, bigint>();
    for (const a of addrs) {
      const k = addrKey(typeof a === 'bigint' ? a : a);
      expect(keyAddr(k)).to.equal(BigInt(a));
      expect(keys.has(k), `key of ${a} already taken by ${keys.get(k)}`).to.equal(false);
      keys.set(k, BigInt(a));
      expect(addrKey(typeof a === 'bigint' ? a : a)).to.equal(k);
    }
    // The usual case is a small integer, which V8 hashes without boxing.
    expect(addrKey(30408704)).to.equal(30408704 / 4096);
  });
});
