/**
 * printTreeBlock / printSuperblock against btrfs-progs 6.2: each stored block
 * was cut from an image made by test/data/blocks/make-images.sh, and its
 * expected text is what `TZ=UTC btrfs inspect-internal dump-tree -b` printed.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { TreeBlock } from '../../src/format/tree-block.js';
import { decodeSuperblock } from '../../src/format/superblock.js';
import { printTreeBlock, keyToString, blockGroupFlagsToString, formatTimestamp, printItemBody, type PrintContext } from '../../src/inspect/print-tree.js';
import { printSuperblock } from '../../src/inspect/print-super.js';
import { csumSize, initChecksums } from '../../src/util/checksum.js';
import { key } from '../../src/format/key.js';
import { KEY, OBJ } from '../../src/format/constants.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// tests run from dist/test/inspect; the data stays in the source tree
export const BLOCKS_DIR = path.resolve(here, '../../../test/data/blocks');

export interface BlockEntry {
  name: string;
  image: string;
  bytenr: string;
  nodesize: number;
  sectorsize: number;
  csumType: number;
  dump: string;
  csumItems?: boolean;
  csumHeaders?: boolean;
}

export function loadManifest(): BlockEntry[] {
  return JSON.parse(fs.readFileSync(path.join(BLOCKS_DIR, 'manifest.json'), 'utf8')) as BlockEntry[];
}

export function loadBlock(name: string): Buffer {
  return zlib.gunzipSync(fs.readFileSync(path.join(BLOCKS_DIR, `${name}.bin.gz`)));
}

/** A readable failure: the first differing lines with some context. */
function diffLines(actual: string, expected: string): string {
  const a = actual.split('\n');
  const e = expected.split('\n');
  for (let i = 0; i < Math.max(a.length, e.length); i++) {
    if (a[i] !== e[i]) {
      const from = Math.max(0, i - 3);
      const ctx = e.slice(from, i).map((l) => `  ${JSON.stringify(l)}`);
      return [`first difference at line ${i + 1}:`, ...ctx,
        `- expected ${JSON.stringify(e[i])}`, `+ actual   ${JSON.stringify(a[i])}`,
        ...e.slice(i + 1, i + 3).map((l) => `  ${JSON.stringify(l)}`)].join('\n');
    }
  }
  return '';
}

function ctxOf(e: BlockEntry): PrintContext {
  return {
    csumType: e.csumType, csumSize: csumSize(e.csumType), nodesize: e.nodesize, sectorsize: e.sectorsize,
    csumItems: !!e.csumItems, csumHeaders: !!e.csumHeaders, utc: true,
  };
}

describe('inspect/print-tree: dump-tree -b output of real blocks', () => {
  for (const e of loadManifest()) {
    it(`${e.dump} (${e.nodesize / 1024}k, csum ${e.csumType})`, () => {
      const block = new TreeBlock(loadBlock(e.name), e.nodesize);
      expect(block.bytenr.toString()).to.equal(e.bytenr);
      const expected = fs.readFileSync(path.join(BLOCKS_DIR, e.dump), 'utf8');
      const actual = printTreeBlock(block, ctxOf(e));
      if (actual !== expected) expect.fail(diffLines(actual, expected));
    });
  }

  it('prints in the process time zone unless told UTC', () => {
    const saved = process.env.TZ;
    try {
      process.env.TZ = 'Asia/Kolkata';
      expect(formatTimestamp(0n)).to.equal('1970-01-01 05:30:00');
      expect(formatTimestamp(0n, true)).to.equal('1970-01-01 00:00:00');
      expect(formatTimestamp(1700000000n, true)).to.equal('2023-11-14 22:13:20');
    } finally {
      if (saved === undefined) delete process.env.TZ; else process.env.TZ = saved;
    }
  });

  it('names objectids and offsets as progs does', () => {
    expect(keyToString(key(OBJ.DEV_STATS, KEY.PERSISTENT_ITEM, 1n))).to.equal('key (DEV_STATS PERSISTENT_ITEM 1)');
    expect(keyToString(key(1n, KEY.DEV_ITEM, 1n))).to.equal('key (DEV_ITEMS DEV_ITEM 1)');
    expect(keyToString(key(256n, KEY.CHUNK_ITEM, 22020096n))).to.equal('key (FIRST_CHUNK_TREE CHUNK_ITEM 22020096)');
    expect(keyToString(key(256n, KEY.INODE_ITEM, 0n))).to.equal('key (256 INODE_ITEM 0)');
    expect(keyToString(key(OBJ.TREE_RELOC, KEY.ROOT_ITEM, 5n))).to.equal('key (TREE_RELOC ROOT_ITEM FS_TREE)');
    expect(keyToString(key(OBJ.DATA_RELOC_TREE, KEY.ROOT_ITEM, 0xffff_ffff_ffff_ffffn)))
      .to.equal('key (DATA_RELOC_TREE ROOT_ITEM 18446744073709551615)');
    expect(keyToString(key(257n, KEY.EXTENT_DATA, 0xffff_ffff_ffff_ffffn))).to.equal('key (257 EXTENT_DATA -1)');
    expect(keyToString(key(0xffff_ffff_ffff_ffffn, KEY.INODE_ITEM, 0n))).to.equal('key (-1 INODE_ITEM 0)');
    expect(keyToString(key(0n, KEY.QGROUP_INFO, (1n << 48n) | 100n))).to.equal('key (0 QGROUP_INFO 1/100)');
    expect(keyToString(key((1n << 48n) | 100n, KEY.QGROUP_RELATION, 5n))).to.equal('key (1/100 QGROUP_RELATION 0/5)');
    expect(keyToString(key(0x1234n, KEY.UUID_KEY_SUBVOL, 0xabcdn))).to.equal('key (0x0000000000001234 UUID_KEY_SUBVOL 0x000000000000abcd)');
    expect(keyToString(key(OBJ.FREE_SPACE, 0, 1n))).to.equal('key (FREE_SPACE UNTYPED 1)');
    expect(keyToString(key(5n, KEY.EXTENT_OWNER_REF, 0n))).to.equal('key (FS_TREE UNKNOWN.172 0)');
    expect(keyToString(key(13n, KEY.TEMPORARY_ITEM, 0n))).to.equal('key (13 TEMPORARY_ITEM 0)');
  });

  it('spells block group flags like progs, quirks included', () => {
    expect(blockGroupFlagsToString(1n)).to.equal('DATA|single');
    expect(blockGroupFlagsToString(4n | 32n)).to.equal('METADATA|DUP');
    expect(blockGroupFlagsToString(1n | 4n)).to.equal('DATA|METADATA|single');
    expect(blockGroupFlagsToString(2n | 16n)).to.equal('SYSTEM|RAID1');
    expect(blockGroupFlagsToString(1n | (1n << 9n))).to.equal('DATA|RAID1C3');
  });

  it('prints items it cannot produce from real images', () => {
    const ctx: PrintContext = { csumType: 0, csumSize: 4, nodesize: 4096, sectorsize: 4096, utc: true };
    const body = (k: ReturnType<typeof key>, d: Buffer) => printItemBody(k, d, ctx);
    expect(body(key(5n, KEY.STRING_ITEM, 0n), Buffer.from('hello\0world'))).to.deep.equal(['\t\titem data hello']);
    expect(body(key(1n, KEY.UUID_KEY_SUBVOL, 1n), Buffer.alloc(12))).to.deep.equal(['btrfs: uuid item with illegal size 12!']);
    expect(body(key(13n, KEY.TEMPORARY_ITEM, 7n), Buffer.alloc(0)))
      .to.deep.equal(['\t\ttemporary item objectid 13 offset 7', '\t\tcsum tree tmp root 7']);
    expect(body(key(9n, KEY.PERSISTENT_ITEM, 7n), Buffer.alloc(0)))
      .to.deep.equal(['\t\tpersistent item objectid 9 offset 7', '\t\tunknown persistent item objectid 9']);
    const stats = Buffer.alloc(48);
    stats.writeBigUInt64LE(3n, 40);
    expect(body(key(0n, KEY.PERSISTENT_ITEM, 1n), stats)).to.deep.equal([
      '\t\tpersistent item objectid DEV_STATS offset 1', '\t\tdevice stats',
      '\t\twrite_errs 0 read_errs 0 flush_errs 0 corruption_errs 0 generation 0',
      '\t\tunknown stats item bytes 8\t\tunknown item 5 offset 40 value 3',
    ]);
    // an extent item with an inline ref progs 6.2 does not know stops there
    const ei = Buffer.alloc(24 + 9 + 9);
    ei.writeBigUInt64LE(1n, 0); ei.writeBigUInt64LE(7n, 8); ei.writeBigUInt64LE(2n, 16);
    ei[24] = KEY.TREE_BLOCK_REF; ei.writeBigUInt64LE(5n, 25);
    ei[33] = KEY.EXTENT_OWNER_REF; ei.writeBigUInt64LE(5n, 34);
    expect(body(key(4096n, KEY.METADATA_ITEM, 0n), ei)).to.deep.equal([
      '\t\trefs 1 gen 7 flags TREE_BLOCK', '\t\ttree block skinny level 0', '\t\ttree block backref root FS_TREE',
    ]);
    expect(body(key(4096n, KEY.EXTENT_ITEM, 4096n), Buffer.alloc(8))).to.deep.equal([]);
    expect(body(key(1n, KEY.DEV_REPLACE, 0n), Buffer.alloc(72))).to.deep.equal([]);
    expect(body(key(256n, KEY.DIR_LOG_ITEM, 5n), Buffer.from([9, 0, 0, 0, 0, 0, 0, 0]))).to.deep.equal(['\t\tdir log end 9']);
  });
});

describe('inspect/print-super: dump-super -f output', () => {
  before(async () => { await initChecksums(); });
  for (const image of ['main', 'big', 'mixed', 'raid-a']) {
    it(`${image}.super.txt`, () => {
      const raw = zlib.gunzipSync(fs.readFileSync(path.join(BLOCKS_DIR, `${image}.super.bin.gz`)));
      const expected = fs.readFileSync(path.join(BLOCKS_DIR, `${image}.super.txt`), 'utf8');
      const actual = printSuperblock(decodeSuperblock(raw), raw, { full: true, device: `${image}.img` });
      if (actual !== expected) expect.fail(diffLines(actual, expected));
    });
  }

  it('flags a bad checksum and prints unknown feature bits', () => {
    const raw = zlib.gunzipSync(fs.readFileSync(path.join(BLOCKS_DIR, 'main.super.bin.gz')));
    raw[0] = raw[0]! ^ 0xff;
    const sb = decodeSuperblock(raw);
    sb.incompat_flags |= 1n << 13n | 1n << 40n;
    const text = printSuperblock(sb, raw);
    expect(text).to.match(/^csum\t\t\t0x[0-9a-f]{8} \[DON'T MATCH\]$/m);
    // progs names a set bit from its table even when it also counts it as unsupported
    expect(text).to.contain("\t\t\t  NO_HOLES |\n\t\t\t  EXTENT_TREE_V2 |\n\t\t\t  unknown flag: 0x10000002000 )\n");
    expect(text.startsWith('csum_type\t\t0 (crc32c)\n')).to.equal(true);
  });
});
