/** btrfs send from an image: see send.ts. */
export { send, type SendOptions, type SendStats } from './send.js';
export { diffTrees, type DiffItem, type DiffStats } from './tree-diff.js';
export { acquireSendGuards, type SendGuards, type GuardOptions } from './guards.js';
