/**
 * Strict mode for write tests: after a commit, our own check and btrfs
 * check (its output read, not only its exit code) must both find nothing.
 */
import { expect } from 'chai';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { btrfsCheck } from './kernel.js';

export async function expectClean(img: string): Promise<void> {
  const ours = await checkImage(img);
  expect(ours.findings.filter((f) => f.severity === 'error').map(formatFinding), 'tsbtrfs check').to.deep.equal([]);
  const progs = await btrfsCheck(img);
  expect(progs.problems, progs.output).to.deep.equal([]);
  expect(progs.ok, progs.output).to.equal(true);
}
