/**
 * A fixture seen through an OverlayDevice with one tree item rewritten (and
 * its block's checksum recomputed, so that only the cross-tree checks can
 * notice), for tests that hold the checker to a kind of damage.
 */
import { expect } from 'chai';
import { FileDevice } from '../../src/device/file-device.js';
import { FsInfo } from '../../src/tree/fs-info.js';
import { iterItems, type TreeItem } from '../../src/tree/search.js';
import { HEADER_SIZE } from '../../src/format/constants.js';
import { checksum } from '../../src/util/checksum.js';
import type { BlockDevice } from '../../src/device/block-device.js';
import { fixturePath } from './fixtures.js';
import { OverlayDevice } from './overlay-device.js';

/**
 * Finds the first item of tree `tree` of `fixture` that `pick` accepts, lets
 * `edit` change the block (header included) and the item's bytes, and runs
 * `use` on the damaged image.
 */
export async function withDamagedItem<T>(
  fixture: string, tree: bigint, pick: (it: TreeItem) => boolean, edit: (block: Buffer, data: Buffer) => void, use: (dev: BlockDevice) => Promise<T>,
): Promise<T> {
  const base = await FileDevice.open(await fixturePath(fixture), { readOnly: true });
  try {
    const info = await FsInfo.open(base);
    const root = await info.rootOf(tree);
    let hit: TreeItem | undefined;
    for await (const it of iterItems(info.reader, root)) if (pick(it)) { hit = it; break; }
    expect(hit, 'an item to damage').to.not.equal(undefined);
    const buf = Buffer.from(hit!.block.buf);
    const item = hit!.block.items[hit!.slot]!;
    const data = buf.subarray(HEADER_SIZE + item.offset, HEADER_SIZE + item.offset + item.size);
    edit(buf, data);
    checksum(info.csumType, buf.subarray(32)).copy(buf, 0);
    const dev = new OverlayDevice(base);
    for (const c of info.chunks.map(hit!.block.bytenr, info.nodesize)) dev.patch(Number(c.physical), buf);
    return await use(dev);
  } finally {
    await base.close();
  }
}
