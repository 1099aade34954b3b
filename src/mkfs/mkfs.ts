/**
 * mkfs: a new, empty btrfs on an image file, a host block device or any
 * BlockDevice, the same filesystem mkfs.btrfs 6.2 makes with its defaults
 * (see layout.ts for where things go, trees.ts for what is in them).
 *
 * Order of writes: the first 1 MiB is zeroed (which also wipes an old primary
 * superblock), then the tree blocks go to every copy, a flush, and only then
 * the superblocks, so an interrupted mkfs never leaves a superblock that
 * points at blocks not yet written.
 */
import { randomUUID } from 'node:crypto';
import { BtrfsError, isBtrfsError } from '../util/errors.js';
import { CSUM_TYPE, initChecksums } from '../util/checksum.js';
import { isZero, uuidFromString, uuidToString } from '../util/bytes.js';
import type { BlockDevice } from '../device/block-device.js';
import { FileDevice } from '../device/file-device.js';
import { LABEL_SIZE, MAGIC, SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS } from '../format/constants.js';
import type { Timespec } from '../format/layout.js';
import { encodeSuperblock, sealSuperblock } from '../format/superblock.js';
import {
  planLayout, RESERVED_BYTES, superblockOffsets, TreeBlockAllocator, type ChunkPlan, type Layout, type MetadataProfile,
} from './layout.js';
import { detectExistingSignature } from './probe.js';
import {
  blockGroupUsed, bytesUsed, describeChunk, encodeInitialLeaf, initialLeaves, initialSuperblock,
  type InitialFs, type TreeBlocks,
} from './trees.js';

export type { MetadataProfile } from './layout.js';

/** Checksum algorithms by the names mkfs.btrfs --csum takes. */
export type MkfsCsum = 'crc32c' | 'xxhash' | 'sha256' | 'blake2';

/** The names btrfs-progs prints (dump-super, mkfs.btrfs's summary). */
const CSUM_NAMES = ['crc32c', 'xxhash64', 'sha256', 'blake2'];

const CSUM_BY_NAME: Record<string, number> = {
  crc32c: CSUM_TYPE.CRC32, xxhash: CSUM_TYPE.XXHASH, xxhash64: CSUM_TYPE.XXHASH,
  sha256: CSUM_TYPE.SHA256, blake2: CSUM_TYPE.BLAKE2, blake2b: CSUM_TYPE.BLAKE2,
};

export interface MkfsOptions {
  /**
   * Filesystem size in bytes (rounded down to the sector size). Required when
   * the image file does not exist yet; an existing image file shorter than
   * this is extended (sparsely). Default: the whole file or device. A
   * BlockDevice (or host block device) cannot grow: a size beyond it is EINVAL.
   */
  size?: number;
  /** at most 255 bytes of UTF-8, no NUL; default none */
  label?: string;
  /** tree block size: a power of two from 4096 to 65536; default 16384 */
  nodesize?: number;
  /** only 4096 is supported */
  sectorsize?: number;
  /** default crc32c */
  csum?: MkfsCsum;
  /** profile of the METADATA and SYSTEM chunks; default 'dup' (DATA is always single) */
  metadataProfile?: MetadataProfile;
  /** uuids as 16 bytes or the usual text form; random when not given (for reproducible images) */
  fsUuid?: Buffer | string;
  devUuid?: Buffer | string;
  chunkTreeUuid?: Buffer | string;
  /** the top-level subvolume's uuid */
  fsTreeUuid?: Buffer | string;
  /** creation time of the root directory and the top-level subvolume; default now, to the nanosecond the clock gives */
  now?: { sec: bigint; nsec: number };
  /** overwrite a device that holds a filesystem or partition table already; default false (EEXIST) */
  force?: boolean;
}

export interface MkfsBlockGroup {
  kind: 'data' | 'metadata' | 'system';
  profile: 'single' | 'DUP';
  logical: number;
  length: number;
  /** bytes taken by tree blocks */
  used: number;
  /** physical offset of each copy */
  stripes: number[];
}

export interface MkfsResult {
  /** the path or device name written */
  device: string;
  fsid: string;
  devUuid: string;
  chunkTreeUuid: string;
  fsTreeUuid: string;
  label: string;
  /** the filesystem's size (superblock total_bytes) */
  totalBytes: number;
  /** bytes in tree blocks (superblock bytes_used) */
  bytesUsed: number;
  nodesize: number;
  sectorsize: number;
  /** checksum algorithm as btrfs-progs names it: crc32c, xxhash64, sha256, blake2 */
  csum: string;
  csumType: number;
  metadataProfile: MetadataProfile;
  generation: number;
  blockGroups: MkfsBlockGroup[];
  /** byte offsets of the superblock copies written */
  superblockCopies: number[];
}

/** Everything the caller chose, checked; nothing here needs the device. */
interface Settings {
  label: string;
  nodesize: number;
  sectorsize: number;
  csumType: number;
  profile: MetadataProfile;
  fsid: Buffer;
  devUuid: Buffer;
  chunkTreeUuid: Buffer;
  fsTreeUuid: Buffer;
  now: Timespec;
  size: number | undefined;
  force: boolean;
}

/** The generation everything is written at: the first commit. */
const GENERATION = 1n;

function invalid(detail: string): BtrfsError {
  return new BtrfsError('EINVAL', detail, { syscall: 'mkfs' });
}

function uuidOption(v: Buffer | string | undefined, what: string): Buffer {
  if (v === undefined) return uuidFromString(randomUUID());
  let b: Buffer;
  if (typeof v === 'string') {
    try {
      b = uuidFromString(v);
    } catch {
      throw invalid(`${what} '${v}' is not a uuid`);
    }
  } else if (Buffer.isBuffer(v) && v.length === 16) {
    b = Buffer.from(v);
  } else {
    throw invalid(`${what} must be 16 bytes or a uuid string`);
  }
  if (isZero(b)) throw invalid(`${what} must not be the nil uuid`);
  return b;
}

/**
 * Wall-clock time with sub-millisecond digits: Date.now() stops at
 * milliseconds, but the high-resolution clock's origin is a wall-clock
 * instant and its offset runs in fractions of a microsecond.
 */
function wallClockNow(): Timespec {
  const ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  return { sec: ns / 1_000_000_000n, nsec: Number(ns % 1_000_000_000n) };
}

function settingsOf(opts: MkfsOptions): Settings {
  const label = opts.label ?? '';
  if (typeof label !== 'string') throw invalid('label must be a string');
  if (Buffer.byteLength(label, 'utf8') > LABEL_SIZE - 1) {
    throw invalid(`label is ${Buffer.byteLength(label, 'utf8')} bytes, at most ${LABEL_SIZE - 1} fit`);
  }
  if (label.includes('\0')) throw invalid('label must not contain NUL');

  const sectorsize = opts.sectorsize ?? 4096;
  if (sectorsize !== 4096) throw invalid(`sectorsize ${sectorsize} is not supported, only 4096`);
  const nodesize = opts.nodesize ?? 16384;
  if (!Number.isInteger(nodesize) || nodesize < 4096 || nodesize > 65536 || (nodesize & (nodesize - 1)) !== 0) {
    throw invalid(`nodesize ${nodesize} is not a power of two from 4096 to 65536`);
  }
  if (nodesize < sectorsize) throw invalid(`nodesize ${nodesize} is smaller than sectorsize ${sectorsize}`);

  const csumType = CSUM_BY_NAME[String(opts.csum ?? 'crc32c').toLowerCase()];
  if (csumType === undefined) throw invalid(`unknown checksum '${opts.csum}', expect crc32c, xxhash, sha256 or blake2`);

  const profile = String(opts.metadataProfile ?? 'dup').toLowerCase();
  if (profile !== 'dup' && profile !== 'single') throw invalid(`metadata profile '${opts.metadataProfile}' is not supported, expect single or dup`);

  const size = opts.size;
  if (size !== undefined && (!Number.isSafeInteger(size) || size <= 0)) throw invalid(`size ${size} is not a positive number of bytes`);

  let now = opts.now;
  if (now === undefined) {
    now = wallClockNow();
  } else if (typeof now.sec !== 'bigint' || !Number.isInteger(now.nsec) || now.nsec < 0 || now.nsec > 999_999_999) {
    throw invalid('now must be { sec: bigint, nsec: integer 0..999999999 }');
  }

  return {
    label, nodesize, sectorsize, csumType, profile, size, force: opts.force ?? false,
    fsid: uuidOption(opts.fsUuid, 'fsUuid'),
    devUuid: uuidOption(opts.devUuid, 'devUuid'),
    chunkTreeUuid: uuidOption(opts.chunkTreeUuid, 'chunkTreeUuid'),
    fsTreeUuid: uuidOption(opts.fsTreeUuid, 'fsTreeUuid'),
    now: { sec: now.sec, nsec: now.nsec },
  };
}

function existingFsError(name: string, what: string): BtrfsError {
  return new BtrfsError('EEXIST', `appears to contain an existing filesystem (${what}); use force (-f) to overwrite it`, { path: name });
}

/** The filesystem size for a device of deviceBytes, rounded down to whole sectors. */
function fsBytesFor(s: Settings, deviceBytes: number, canGrow: boolean, name: string): bigint {
  const want = s.size ?? deviceBytes;
  if (want > deviceBytes && !canGrow) {
    throw new BtrfsError('EINVAL', `size ${want} is larger than the device (${deviceBytes} bytes)`, { path: name });
  }
  return BigInt(Math.floor(want / s.sectorsize) * s.sectorsize);
}

interface Target { device: BlockDevice; owned: boolean; layout: Layout }

/**
 * Opens (creating or growing, for image files) what mkfs writes to. Every
 * check that can fail without writing runs before anything is created.
 */
async function openTarget(target: string | BlockDevice, s: Settings): Promise<Target> {
  if (typeof target !== 'string') {
    const layout = planLayout(fsBytesFor(s, target.size, false, target.name), s.profile);
    if (!s.force) {
      const found = await detectExistingSignature(target);
      if (found) throw existingFsError(target.name, found);
    }
    return { device: target, owned: false, layout };
  }

  // Look before taking the write lock, and before creating or growing anything.
  let probe: FileDevice;
  try {
    probe = await FileDevice.open(target, { readOnly: true });
  } catch (e) {
    if (!isBtrfsError(e, 'ENOENT')) throw e;
    if (s.size === undefined) throw new BtrfsError('EINVAL', 'the image does not exist: give a size to create it', { path: target });
    const layout = planLayout(fsBytesFor(s, s.size, true, target), s.profile);
    return { device: await FileDevice.open(target, { create: true, sizeBytes: s.size }), owned: true, layout };
  }
  let layout: Layout;
  let grow: number | undefined;
  try {
    layout = planLayout(fsBytesFor(s, probe.size, !probe.isBlockDevice, target), s.profile);
    if (!s.force) {
      const found = await detectExistingSignature(probe);
      if (found) throw existingFsError(target, found);
    }
    if (s.size !== undefined && s.size > probe.size) grow = s.size;
  } finally {
    await probe.close();
  }
  const device = await FileDevice.open(target, grow !== undefined ? { sizeBytes: grow } : {});
  return { device, owned: true, layout };
}

/** Places each tree's one leaf: the chunk tree in SYSTEM, the rest in METADATA. */
function placeTrees(layout: Layout, nodesize: number): TreeBlocks {
  const sys = new TreeBlockAllocator(layout.system, nodesize);
  const meta = new TreeBlockAllocator(layout.metadata, nodesize);
  return {
    chunk: sys.alloc(),
    root: meta.alloc(), extent: meta.alloc(), dev: meta.alloc(), fs: meta.alloc(), csum: meta.alloc(),
    uuid: meta.alloc(), freeSpace: meta.alloc(), dataReloc: meta.alloc(),
  };
}

function copiesOf(layout: Layout, bytenr: bigint): number[] {
  const c = layout.chunks.find((ch) => bytenr >= ch.logical && bytenr < ch.logical + ch.length);
  if (!c) throw new Error(`tree block ${bytenr} placed outside every chunk`);
  return c.stripes.map((s) => Number(s + (bytenr - c.logical)));
}

async function writeFilesystem(dev: BlockDevice, f: InitialFs): Promise<number[]> {
  await dev.write(0, Buffer.alloc(Number(RESERVED_BYTES)));
  for (const leaf of initialLeaves(f)) {
    const bytes = encodeInitialLeaf(f, leaf);
    for (const physical of copiesOf(f.layout, leaf.bytenr)) await dev.write(physical, bytes);
  }
  await dev.flush();

  const sb = initialSuperblock(f);
  const mirrors = superblockOffsets(f.layout.totalBytes);
  for (const off of mirrors) {
    const buf = encodeSuperblock({ ...sb, bytenr: BigInt(off) });
    sealSuperblock(buf, f.csumType);
    await dev.write(off, buf);
  }
  // A stale btrfs superblock past the new filesystem's end (the device is
  // larger than the size asked for) would still be found by tools that scan
  // every mirror offset the device holds.
  for (const off of SUPER_MIRROR_OFFSETS) {
    if (mirrors.includes(off) || off + SUPER_INFO_SIZE > dev.size) continue;
    const old = await dev.read(off + 64, MAGIC.length);
    if (old.equals(MAGIC)) await dev.write(off, Buffer.alloc(SUPER_INFO_SIZE));
  }
  await dev.flush();
  return mirrors;
}

function blockGroupOf(f: InitialFs, c: ChunkPlan): MkfsBlockGroup {
  return {
    ...describeChunk(c), logical: Number(c.logical), length: Number(c.length),
    used: Number(blockGroupUsed(f, c)), stripes: c.stripes.map(Number),
  };
}

/**
 * Writes a new, empty btrfs to `target`: a path (an image file, created if
 * missing, or a host block device) or an open BlockDevice (flushed, left open).
 *
 * Errors (BtrfsError): EINVAL for a bad option or a device too small for the
 * three initial chunks (mixed block groups, which mkfs.btrfs uses below about
 * 114 MiB, are not supported); EEXIST when the device already holds a
 * filesystem or partition table and `force` is not set; the device's own
 * errors (EBUSY for a locked image or a mounted block device, EROFS, EIO).
 */
export async function mkfs(target: string | BlockDevice, opts: MkfsOptions = {}): Promise<MkfsResult> {
  const s = settingsOf(opts);
  if (s.csumType === CSUM_TYPE.XXHASH) await initChecksums();
  const { device, owned, layout } = await openTarget(target, s);
  try {
    const f: InitialFs = {
      layout, blocks: placeTrees(layout, s.nodesize),
      ids: { fsid: s.fsid, devUuid: s.devUuid, chunkTreeUuid: s.chunkTreeUuid, fsTreeUuid: s.fsTreeUuid },
      nodesize: s.nodesize, sectorsize: s.sectorsize, csumType: s.csumType, generation: GENERATION, now: s.now, label: s.label,
    };
    const superblockCopies = await writeFilesystem(device, f);
    return {
      device: device.name,
      fsid: uuidToString(s.fsid), devUuid: uuidToString(s.devUuid), chunkTreeUuid: uuidToString(s.chunkTreeUuid),
      fsTreeUuid: uuidToString(s.fsTreeUuid), label: s.label,
      totalBytes: Number(layout.totalBytes), bytesUsed: Number(bytesUsed(f)),
      nodesize: s.nodesize, sectorsize: s.sectorsize, csum: CSUM_NAMES[s.csumType]!, csumType: s.csumType,
      metadataProfile: s.profile, generation: Number(GENERATION),
      blockGroups: layout.chunks.map((c) => blockGroupOf(f, c)), superblockCopies,
    };
  } finally {
    if (owned) await device.close();
  }
}
