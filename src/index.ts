/**
 * The public library API of tsbtrfs.
 *
 *   import { Filesystem } from 'tsbtrfs';
 *   const fs = await Filesystem.open('disk.img', { readOnly: true });
 *   console.log(await fs.readdir('/'));
 */
export { BtrfsError, type ErrnoCode, isBtrfsError } from './util/errors.js';
export type { BlockDevice } from './device/block-device.js';
export { FileDevice } from './device/file-device.js';
export { MemoryDevice } from './device/memory-device.js';
export { Filesystem, Dirent, type Resolved, type FilesystemOpenOptions } from './fs/filesystem.js';
export { Stats } from './fs/stats.js';
export type { SubvolumeInfo } from './fs/subvolumes.js';
export { extract, type ExtractOptions, type ExtractResult } from './fs/extract.js';
export { FsInfo } from './tree/fs-info.js';
export { dumpTree, type DumpTreeOptions } from './inspect/dump-tree.js';
export { printSuperblock } from './inspect/print-super.js';
export { OBJ, KEY, ROOT_FLAG } from './format/constants.js';
export { nativeHostAvailable } from './util/host.js';

// --- check (read-only fsck) ---------------------------------------------------
export {
  checkImage, formatFinding, reportToJson,
  type CheckOptions, type CheckReport, type Finding, type Severity, type CheckStats,
} from './check/index.js';

// --- mkfs (a new, empty filesystem) ----------------------------------------------
export {
  mkfs, detectExistingSignature, minDeviceBytes,
  type MkfsOptions, type MkfsResult, type MkfsBlockGroup, type MkfsCsum, type MetadataProfile,
} from './mkfs/index.js';

// --- send streams: the format, and receive --dump ---------------------------------
export * from './format/send-stream.js';
export {
  decodeOp, validateOp, readOps, checkRelativePath, PATH_MAX, NAME_MAX, MAX_FILE_SIZE,
  type SendOp, type SendOpName, type SendTime, type SendStreamItem, type DecodeOpOptions,
} from './receive/parse.js';
export {
  dumpSendStream, dumpSendStreamToBuffer, DumpPrinter, escapeDumpPath, formatDumpTime,
  type DumpOptions, type DumpResult, type DumpSink,
} from './receive/dump.js';

export { receive, type ReceiveOptions, type ReceivedSubvolume } from './receive/apply.js';

// --- send (a read-only snapshot as a stream, full or incremental) -------------------
export { send, type SendOptions, type SendStats } from './send/index.js';

// --- subvolumes: create, snapshot, delete, sync, read-only, default --------------------
export { Subvolumes } from './subvol/api.js';
export { RootLocks, RootItemLock, type RootGuard } from './subvol/root-lock.js';

// --- writing: the POSIX layer over transactions ------------------------------------
export {
  WritableFilesystem, toTimespec, kernelRdev,
  type WritableOpenOptions, type CreateOptions, type TimeInput,
} from './fs/writable.js';
export { FsWriter, type CommitStats, type WriterOptions } from './transaction/writer.js';
export { importTree, type ImportOptions, type ImportResult, type ImportProgress } from './fs/import.js';
