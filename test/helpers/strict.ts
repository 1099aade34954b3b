/**
 * Strict mode for write tests: after a commit, our own check and btrfs
 * check (its output read, not only its exit code) must both find nothing.
 */
import { expect } from 'chai';
import { checkImage, formatFinding } from '../../src/check/index.js';
import { btrfsCheck } from './kernel.js';

/** Our check's errors on the image, formatted (warnings do not count). */
export async function ourErrors(img: string): Promise<string[]> {
  const ours = await checkImage(img);
  return ours.findings.filter((f) => f.severity === 'error').map(formatFinding);
}

export async function expectClean(img: string): Promise<void> {
  expect(await ourErrors(img), 'tsbtrfs check').to.deep.equal([]);
  const progs = await btrfsCheck(img);
  expect(progs.problems, progs.output).to.deep.equal([]);
  expect(progs.ok, progs.output).to.equal(true);
}
