/**
 * No false positives: every native fixture is clean per `btrfs check`, so
 * our check must report no error on any of them.
 */
import { expect } from 'chai';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { fixturePath, listFixtures } from '../helpers/fixtures.js';

describe('check: native fixtures are clean', function () {
  this.timeout(600_000);
  it('reports no error on any fixture', async () => {
    const problems: string[] = [];
    for (const name of await listFixtures()) {
      const r = await checkImage(await fixturePath(name));
      console.log(`    ${name}: ${r.errors} errors, ${r.warnings} warnings, ${r.stats.treeBlocks} blocks, ${r.elapsedMs.toFixed(0)} ms`);
      for (const f of r.findings.slice(0, 8)) problems.push(`${name}: ${formatFinding(f)}`);
    }
    expect(problems).to.deep.equal([]);
  });
});
