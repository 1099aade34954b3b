/** Awaits p and asserts it rejects with a BtrfsError of `code` (and `text` in its message); returns the error. */
import { expect } from 'chai';
import { BtrfsError } from '../../src/util/errors.js';

export async function rejects(p: Promise<unknown>, code: string, text?: string): Promise<BtrfsError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(BtrfsError);
    expect((e as BtrfsError).code).to.equal(code);
    if (text) expect((e as BtrfsError).message).to.contain(text);
    return e as BtrfsError;
  }
  throw new Error(`expected ${code}`);
}

/** What p rejects with, or undefined when it resolves (for tests that look at the error themselves). */
export async function errOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  return undefined;
}
