/** mkfs: a new, empty btrfs filesystem on an image file or device. */
export { mkfs, type MkfsOptions, type MkfsResult, type MkfsBlockGroup, type MkfsCsum, type MetadataProfile } from './mkfs.js';
export { detectExistingSignature } from './probe.js';
export { minDeviceBytes, planLayout, type Layout, type ChunkPlan } from './layout.js';
