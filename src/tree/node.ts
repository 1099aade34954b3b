// TreeBlock is a pure codec and lives in format/; kept importable from here for tree code.
export { TreeBlock, type LeafItem } from '../format/tree-block.js';
