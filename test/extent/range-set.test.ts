/**
 * RangeSet against a naive model (a set of sector numbers), seeded.
 */
import { expect } from 'chai';
import { RangeSet } from '../../src/extent/range-set.js';
import { mulberry32 } from '../../src/util/random.js';

function model(rs: RangeSet): number[] {
  const out: number[] = [];
  for (const r of rs) for (let i = Number(r.start); i < Number(r.end); i++) out.push(i);
  return out;
}

describe('extent: RangeSet', () => {
  it('add/remove/contains/intersects/findFit agree with a per-unit model over seeded random operations', () => {
    const seed = 4242;
    const rnd = mulberry32(seed);
    const rs = new RangeSet();
    const m = new Set<number>();
    for (let op = 0; op < 5000; op++) {
      const s = Math.floor(rnd() * 200);
      const e = s + Math.floor(rnd() * 20);
      if (rnd() < 0.55) {
        rs.add(BigInt(s), BigInt(e));
        for (let i = s; i < e; i++) m.add(i);
      } else {
        rs.remove(BigInt(s), BigInt(e));
        for (let i = s; i < e; i++) m.delete(i);
      }
      expect(model(rs), `seed ${seed} op ${op}`).to.deep.equal([...m].sort((a, b) => a - b));
      // coalesced: no two ranges touch
      const arr = [...rs];
      for (let i = 1; i < arr.length; i++) expect(arr[i]!.start > arr[i - 1]!.end).to.equal(true);
      const q = Math.floor(rnd() * 200);
      const ql = 1 + Math.floor(rnd() * 5);
      let all = true;
      let any = false;
      for (let i = q; i < q + ql; i++) { if (m.has(i)) any = true; else all = false; }
      expect(rs.contains(BigInt(q), BigInt(q + ql))).to.equal(all);
      expect(rs.intersects(BigInt(q), BigInt(q + ql))).to.equal(any);
      const fit = rs.findFit(BigInt(ql), 1n);
      let want: number | undefined;
      for (let i = 0; i < 220 && want === undefined; i++) {
        let ok = true;
        for (let j = i; j < i + ql; j++) if (!m.has(j)) { ok = false; break; }
        if (ok) want = i;
      }
      expect(fit === undefined ? undefined : Number(fit)).to.equal(want);
    }
  });

  it('findFit honours alignment and an avoid set; largest finds the biggest aligned piece', () => {
    const rs = new RangeSet([{ start: 3n, end: 40n }, { start: 64n, end: 128n }]);
    expect(rs.findFit(16n, 16n)).to.equal(16n);
    const avoid = new RangeSet([{ start: 16n, end: 20n }]);
    expect(rs.findFit(16n, 16n, avoid)).to.equal(64n);
    expect(rs.largest(16n, avoid)).to.deep.equal({ start: 64n, end: 128n });
    expect(rs.findFit(100n, 1n)).to.equal(undefined);
  });
});
