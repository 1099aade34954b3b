/**
 * A set of byte ranges [start, end) over bigint addresses, kept sorted and
 * coalesced. Free space, pinned space and the super-mirror stripes of a block
 * group are all range sets; allocation is "first range that fits".
 */
import { BtrfsError } from '../util/errors.js';

export interface Range { start: bigint; end: bigint }

export class RangeSet {
  private starts: bigint[] = [];
  private ends: bigint[] = [];

  constructor(ranges: Iterable<Range> = []) {
    for (const r of ranges) this.add(r.start, r.end);
  }

  get count(): number { return this.starts.length; }

  /** Total bytes covered. */
  get bytes(): bigint {
    let n = 0n;
    for (let i = 0; i < this.starts.length; i++) n += this.ends[i]! - this.starts[i]!;
    return n;
  }

  clone(): RangeSet {
    const c = new RangeSet();
    c.starts = [...this.starts];
    c.ends = [...this.ends];
    return c;
  }

  *[Symbol.iterator](): IterableIterator<Range> {
    for (let i = 0; i < this.starts.length; i++) yield { start: this.starts[i]!, end: this.ends[i]! };
  }

  /** Index of the first range whose end is > x. */
  private firstEndAfter(x: bigint): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** Adds [start, end), merging with neighbours it touches or overlaps. */
  add(start: bigint, end: bigint): void {
    if (end <= start) return;
    // ranges touching at an endpoint merge, so look from the first whose end >= start
    let i = this.firstEndAfter(start - 1n);
    let s = start;
    let e = end;
    let j = i;
    while (j < this.starts.length && this.starts[j]! <= e) {
      if (this.starts[j]! < s) s = this.starts[j]!;
      if (this.ends[j]! > e) e = this.ends[j]!;
      j++;
    }
    this.starts.splice(i, j - i, s);
    this.ends.splice(i, j - i, e);
  }

  /** Removes [start, end) (parts not present are ignored). */
  remove(start: bigint, end: bigint): void {
    if (end <= start) return;
    const i = this.firstEndAfter(start);
    let j = i;
    const newS: bigint[] = [];
    const newE: bigint[] = [];
    while (j < this.starts.length && this.starts[j]! < end) {
      const s = this.starts[j]!;
      const e = this.ends[j]!;
      if (s < start) { newS.push(s); newE.push(start); }
      if (e > end) { newS.push(end); newE.push(e); }
      j++;
    }
    this.starts.splice(i, j - i, ...newS);
    this.ends.splice(i, j - i, ...newE);
  }

  /** True if every byte of [start, end) is in the set. */
  contains(start: bigint, end: bigint): boolean {
    const i = this.firstEndAfter(start);
    return i < this.starts.length && this.starts[i]! <= start && this.ends[i]! >= end;
  }

  /** True if any byte of [start, end) is in the set. */
  intersects(start: bigint, end: bigint): boolean {
    const i = this.firstEndAfter(start);
    return i < this.starts.length && this.starts[i]! < end;
  }

  /**
   * The lowest aligned start of `len` bytes inside one range of this set and
   * clear of every range in `avoid`, or undefined.
   */
  findFit(len: bigint, align: bigint, avoid?: RangeSet, from = 0n): bigint | undefined {
    for (let i = this.firstEndAfter(from); i < this.starts.length; i++) {
      let s = this.starts[i]! < from ? from : this.starts[i]!;
      const e = this.ends[i]!;
      for (;;) {
        s = alignUp(s, align);
        if (s + len > e) break;
        const clash = avoid?.firstOverlap(s, s + len);
        if (!clash) return s;
        s = clash.end;
      }
    }
    return undefined;
  }

  /** The largest aligned piece available (for allocations that may come back shorter). */
  largest(align: bigint, avoid?: RangeSet): Range | undefined {
    let best: Range | undefined;
    for (let i = 0; i < this.starts.length; i++) {
      let s = alignUp(this.starts[i]!, align);
      const e = this.ends[i]!;
      while (s < e) {
        const clash = avoid?.firstOverlap(s, e);
        const pe = alignDown(clash ? clash.start : e, align);
        if (pe > s && (!best || pe - s > best.end - best.start)) best = { start: s, end: pe };
        if (!clash) break;
        s = alignUp(clash.end, align);
      }
    }
    return best;
  }

  /** The first range overlapping [start, end), or undefined. */
  firstOverlap(start: bigint, end: bigint): Range | undefined {
    const i = this.firstEndAfter(start);
    if (i < this.starts.length && this.starts[i]! < end) return { start: this.starts[i]!, end: this.ends[i]! };
    return undefined;
  }

  /** Ranges of this set inside [start, end), clipped to it. */
  *within(start: bigint, end: bigint): IterableIterator<Range> {
    for (let i = this.firstEndAfter(start); i < this.starts.length && this.starts[i]! < end; i++) {
      yield { start: this.starts[i]! < start ? start : this.starts[i]!, end: this.ends[i]! > end ? end : this.ends[i]! };
    }
  }

  equals(o: RangeSet): boolean {
    if (o.starts.length !== this.starts.length) return false;
    for (let i = 0; i < this.starts.length; i++) {
      if (o.starts[i] !== this.starts[i] || o.ends[i] !== this.ends[i]) return false;
    }
    return true;
  }
}

export function alignUp(x: bigint, a: bigint): bigint {
  if (a <= 1n) return x;
  const r = x % a;
  return r === 0n ? x : x + a - r;
}

export function alignDown(x: bigint, a: bigint): bigint {
  if (a <= 1n) return x;
  return x - (x % a);
}

/** Throws unless [start, end) is a sane range (callers pass disk data through here). */
export function checkRange(start: bigint, end: bigint, what: string): void {
  if (start < 0n || end < start) throw new BtrfsError('EUCLEAN', `${what}: bad range [${start}, ${end})`);
}
