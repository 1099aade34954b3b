/**
 * Reflink: a range of one file made to share the extents of a range of
 * another (or the same) file, as the kernel's clone ioctl does — the new
 * items point at the same disk extents, each with one more reference, and
 * no data is copied. Receive uses it for a send stream's CLONE commands.
 *
 * The kernel takes sector-aligned ranges only (the end may instead be the
 * source's end of file) and refuses the rest with EINVAL; a send stream
 * only asks for those. Whatever cannot be shared here — unaligned ranges,
 * inline extents on either side, overlapping ranges of one file — is copied
 * instead, so the content is right in every case and shared whenever the
 * kernel would share it.
 */
import { BtrfsError } from '../util/errors.js';
import { KEY, FILE_EXTENT } from '../format/constants.js';
import { key } from '../format/key.js';
import { encodeFileExtentItem, isInlineExtent, type FileExtentRegular } from '../format/items/file-extent-item.js';
import { type FileCtx, extentsIn, dropRange, fillHoles, readRange, sectorOf, roundUp, isHoleItem } from './file-extents.js';
import { writeFileData, truncateFileData } from './file-write.js';

export interface CloneStats {
  /** bytes now shared with the source */
  shared: number;
  /** bytes that had to be copied */
  copied: number;
}

/**
 * Makes [dstOff, dstOff + len) of `dst` hold what [srcOff, srcOff + len) of
 * `src` holds, growing `dst` as needed. Like the file-write functions, it
 * changes only size and nbytes of the inode items; the caller writes `dst`'s
 * back.
 */
export async function cloneRange(dst: FileCtx, dstOff: number, src: FileCtx, srcOff: number, len: number): Promise<CloneStats> {
  for (const [what, n] of [['destination offset', dstOff], ['source offset', srcOff], ['length', len]] as const) {
    if (!Number.isSafeInteger(n) || n < 0) throw new BtrfsError('EINVAL', `clone ${what} ${n} is not a file offset`);
  }
  if (len === 0) return { shared: 0, copied: 0 };
  const srcSize = Number(src.item.size);
  if (srcOff + len > srcSize) throw new BtrfsError('EINVAL', `clone source range ${srcOff}+${len} ends past its end of file (${srcSize})`);
  const sec = sectorOf(dst);
  const dstSize = Number(dst.item.size);
  const sameFile = src.subvol === dst.subvol && src.ino === dst.ino;
  const alignedLen = roundUp(len, sec);
  const tailOk = len % sec === 0 || (srcOff + len === srcSize && dstOff + len >= dstSize);
  const overlap = sameFile && srcOff < dstOff + alignedLen && dstOff < srcOff + alignedLen;
  let share = srcOff % sec === 0 && dstOff % sec === 0 && tailOk && !overlap;
  const items = share ? await extentsIn(src, srcOff, srcOff + alignedLen) : [];
  if (share && items.some((e) => isInlineExtent(e.fe))) share = false;
  if (share && (await extentsIn(dst, 0, 1)).some((e) => isInlineExtent(e.fe))) share = false;
  if (!share) {
    await writeFileData(dst, dstOff, await readRange(src, srcOff, len, srcSize));
    return { shared: 0, copied: len };
  }
  // growing past the old end first zeroes its tail sector (see file-write.ts)
  if (dstOff > dstSize) await truncateFileData(dst, dstOff);
  const { txn } = dst;
  const inserts: { key: ReturnType<typeof key>; data: Buffer }[] = [];
  let shared = 0;
  for (const e of items) {
    const fe = e.fe as FileExtentRegular;
    if (isHoleItem(fe) || (fe.type !== FILE_EXTENT.REG && fe.type !== FILE_EXTENT.PREALLOC)) continue;
    const lo = Math.max(srcOff, e.start);
    const hi = Math.min(srcOff + alignedLen, e.end);
    if (hi <= lo) continue;
    const at = dstOff + (lo - srcOff);
    const item: FileExtentRegular = { ...fe, generation: txn.generation, offset: fe.offset + BigInt(lo - e.start), num_bytes: BigInt(hi - lo) };
    inserts.push({ key: key(dst.ino, KEY.EXTENT_DATA, BigInt(at)), data: encodeFileExtentItem(item) });
    // the reference names the file offset where the extent's byte 0 would sit
    txn.addDataRef({ bytenr: fe.disk_bytenr, numBytes: fe.disk_num_bytes, root: dst.subvol, ino: dst.ino, offset: BigInt.asUintN(64, BigInt(at) - item.offset) });
    dst.item.nbytes += item.num_bytes;
    shared += hi - lo;
  }
  await dropRange(dst, dstOff, dstOff + alignedLen);
  if (inserts.length) await txn.insertItems(dst.subvol, inserts);
  await fillHoles(dst, dstOff, dstOff + alignedLen);
  if (dstOff + len > Number(dst.item.size)) dst.item.size = BigInt(dstOff + len);
  return { shared: Math.min(shared, len), copied: 0 };
}
