/**
 * The send stream writer against consumers that fail: a failed write must
 * surface as EIO wherever it happens, including on the very last write,
 * where the writable reports the error to end()'s callback a tick before
 * its 'error' event (a send that ended there used to report success).
 */
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { StreamWriter, emptyStats } from '../../src/send/stream-writer.js';
import { isBtrfsError } from '../../src/util/errors.js';
import { errOf } from '../helpers/expect-error.js';

/** Fails every write once `failAfter` bytes have arrived, synchronously (as a full disk or a closed pipe would). */
function failing(failAfter: number): Writable {
  let received = 0;
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      received += chunk.length;
      cb(received > failAfter ? new Error('consumer failed on purpose') : null);
    },
  });
}

describe('send: the stream writer and a consumer that fails', () => {
  it('a failure on the last write is EIO from close(), and the late error event does not escape', async () => {
    const out = failing(0);
    const w = new StreamWriter(out, 1, emptyStats());
    await w.header();
    await w.subvol(Buffer.from('sv'), Buffer.alloc(16, 1), 7n);
    const e = await errOf(w.close(true));
    expect(isBtrfsError(e, 'EIO'), String(e)).to.equal(true);
    w.detach();
    // the writable emits 'error' after this; with no listener that would be an uncaught exception
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
  });

  it('a failed write fails the flush that made it with EIO, and every check after it', async () => {
    const out = failing(10);
    const w = new StreamWriter(out, 1, emptyStats());
    await w.header();
    await w.subvol(Buffer.from('sv'), Buffer.alloc(16, 1), 7n);
    const e = await errOf(w.flush());
    expect(isBtrfsError(e, 'EIO'), String(e)).to.equal(true);
    expect(() => w.check()).to.throw().that.satisfies((x: unknown) => isBtrfsError(x, 'EIO'));
    w.detach();
    await new Promise((r) => setImmediate(r));
  });

  it('a consumer that takes everything: close() ends the stream once all was handed over', async () => {
    let received = 0;
    const out = new Writable({ write(chunk: Buffer, _enc, cb) { received += chunk.length; cb(); } });
    const stats = emptyStats();
    const w = new StreamWriter(out, 1, stats);
    await w.header();
    await w.subvol(Buffer.from('sv'), Buffer.alloc(16, 1), 7n);
    await w.close(true);
    w.detach();
    expect(received).to.equal(stats.bytes);
    expect(out.writableFinished).to.equal(true);
  });
});
