/**
 * Is something already on this device? mkfs.btrfs asks libblkid and refuses
 * without -f; these are the signatures worth that refusal here: btrfs at any
 * superblock mirror, the common Linux filesystems, swap, LUKS and partition
 * tables. A device of zeros (a fresh sparse file) has none.
 */
import type { BlockDevice } from '../device/block-device.js';
import { MAGIC, SUPER_INFO_OFFSET, SUPER_MIRROR_OFFSETS } from '../format/constants.js';

interface Signature {
  name: string;
  offset: number;
  bytes: Buffer;
}

const ascii = (s: string) => Buffer.from(s, 'latin1');

const SIGNATURES: Signature[] = [
  ...SUPER_MIRROR_OFFSETS.map((off) => ({ name: 'btrfs', offset: off + 64, bytes: MAGIC })),
  { name: 'ext2/ext3/ext4', offset: 1024 + 56, bytes: Buffer.from([0x53, 0xef]) },
  { name: 'xfs', offset: 0, bytes: ascii('XFSB') },
  { name: 'crypto_LUKS', offset: 0, bytes: Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]) },
  { name: 'swap', offset: 4096 - 10, bytes: ascii('SWAPSPACE2') },
  { name: 'swap', offset: 4096 - 10, bytes: ascii('SWAP-SPACE') },
  { name: 'f2fs', offset: 1024, bytes: Buffer.from([0x10, 0x20, 0xf5, 0xf2]) },
  { name: 'iso9660', offset: 32769, bytes: ascii('CD001') },
  { name: 'partition table (gpt)', offset: 512, bytes: ascii('EFI PART') },
  // FAT boot sectors carry the same 0x55AA as an MBR; tell them apart by their type string
  { name: 'vfat', offset: 82, bytes: ascii('FAT32') },
  { name: 'vfat', offset: 54, bytes: ascii('FAT1') },
  { name: 'partition table (dos)', offset: 510, bytes: Buffer.from([0x55, 0xaa]) },
];

/**
 * The name of the first known signature found on the device (the kind of
 * filesystem or partition table it appears to hold), or undefined. Reads only
 * what lies inside the device.
 */
export async function detectExistingSignature(dev: BlockDevice): Promise<string | undefined> {
  const headLen = Math.min(dev.size, SUPER_INFO_OFFSET + 4096);
  const head = headLen > 0 ? await dev.read(0, headLen) : Buffer.alloc(0);
  for (const sig of SIGNATURES) {
    const end = sig.offset + sig.bytes.length;
    if (end > dev.size) continue;
    const got = end <= head.length ? head.subarray(sig.offset, end) : await dev.read(sig.offset, sig.bytes.length);
    if (got.equals(sig.bytes)) return sig.name;
  }
  return undefined;
}
