/**
 * Item codecs against real bytes: every item of every stored tree block
 * (test/data/blocks, cut from images made by mkfs.btrfs and the kernel)
 * decodes and re-encodes to the same bytes, and cut short it is EUCLEAN.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { TreeBlock } from '../../src/format/tree-block.js';
import { KEY, OBJ, FT } from '../../src/format/constants.js';
import { key, type Key } from '../../src/format/key.js';
import { isBtrfsError } from '../../src/util/errors.js';
import { printItemBody } from '../../src/inspect/print-tree.js';
import { csumSize, nameHash, nameHashAt, extrefHash } from '../../src/util/checksum.js';
import {
  decodeItem, encodeItem, type DecodedItem, type DecodedKind,
  decodeRootItem, encodeRootItem, ROOT_ITEM_SIZE, ROOT_ITEM_V0_SIZE,
  decodeExtentItem, encodeExtentItem, extentDataRefHash,
  decodeFileExtentItem, encodeFileExtentItem, FILE_EXTENT_INLINE_DATA_START,
  decodeBalanceItem, encodeBalanceItem, BALANCE_ITEM_SIZE, balanceUsage,
  decodeQgroupStatus, encodeQgroupStatus, qgroupLevel, qgroupSubvolid, qgroupId,
  decodeDirItems, encodeDirItems, bitmapRanges, uuidFromKey, uuidKeyParts,
  INODE_ITEM_SIZE, DEV_REPLACE_ITEM_SIZE,
} from '../../src/format/items/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const BLOCKS_DIR = path.resolve(here, '../../../test/data/blocks');

interface Entry { name: string; nodesize: number; csumType: number }

interface Sample { block: string; key: Key; data: Buffer; csumSize: number }

function loadSamples(): Sample[] {
  const manifest = JSON.parse(fs.readFileSync(path.join(BLOCKS_DIR, 'manifest.json'), 'utf8')) as Entry[];
  const seen = new Set<string>();
  const out: Sample[] = [];
  for (const e of manifest) {
    if (seen.has(e.name)) continue;
    seen.add(e.name);
    const buf = zlib.gunzipSync(fs.readFileSync(path.join(BLOCKS_DIR, `${e.name}.bin.gz`)));
    const block = new TreeBlock(buf, e.nodesize);
    for (const it of block.items) out.push({ block: e.name, key: it.key, data: it.data, csumSize: csumSize(e.csumType) });
  }
  return out;
}

const samples = loadSamples();
const byKind = new Map<DecodedKind, Array<Sample & { item: DecodedItem }>>();
for (const s of samples) {
  const item = decodeItem(s.key, s.data, { csumSize: s.csumSize });
  const list = byKind.get(item.kind) ?? [];
  list.push({ ...s, item });
  byKind.set(item.kind, list);
}

/** Kinds whose bytes, one byte short, are no longer a valid item. */
const STRICT: DecodedKind[] = [
  'inode_item', 'inode_ref', 'inode_extref', 'dir_item', 'dir_index', 'xattr_item', 'dir_log_index',
  'root_ref', 'root_backref', 'extent_item', 'metadata_item', 'extent_data_ref', 'shared_data_ref',
  'extent_csum', 'block_group_item', 'free_space_info', 'free_space_header', 'dev_item', 'chunk_item',
  'dev_extent', 'dev_stats', 'dev_replace', 'balance_item', 'qgroup_status', 'qgroup_info', 'qgroup_limit',
  'uuid_subvol', 'uuid_received_subvol',
];

describe('format/items: codecs on real items', () => {
  it('the stored blocks hold every item kind the real tools make', () => {
    const want: DecodedKind[] = [
      ...STRICT, 'file_extent_item', 'root_item', 'orphan_item', 'tree_block_ref', 'free_space_extent',
      'free_space_bitmap', 'qgroup_relation',
    ];
    const missing = want.filter((k) => !byKind.has(k));
    expect(missing, 'kinds without a sample').to.deep.equal([]);
    expect(byKind.has('unknown'), 'no item should decode as unknown').to.equal(false);
  });

  for (const [kind, list] of [...byKind.entries()].sort()) {
    it(`${kind}: decode then encode gives the same bytes (${list.length} items)`, () => {
      for (const s of list) {
        const again = encodeItem(s.item);
        if (!again.equals(s.data)) {
          expect.fail(`${s.block} key (${s.key.objectid} ${s.key.type} ${s.key.offset}): re-encoded bytes differ\n` +
            `  stored ${s.data.toString('hex')}\n  got    ${again.toString('hex')}`);
        }
      }
    });
    if (STRICT.includes(kind)) {
      it(`${kind}: one byte short is EUCLEAN`, () => {
        for (const s of list.slice(0, 50)) {
          if (s.data.length === 0) continue;
          const short = s.data.subarray(0, s.data.length - 1);
          let err: unknown;
          try { decodeItem(s.key, short, { csumSize: s.csumSize }); } catch (e) { err = e; }
          expect(isBtrfsError(err, 'EUCLEAN'), `${s.block} ${s.key.type}/${s.key.offset}: ${String(err)}`).to.equal(true);
        }
      });
    }
  }

  it('any truncation of any item is decoded or EUCLEAN, and still printable', () => {
    const ctx = { csumType: 0, csumSize: 4, nodesize: 16384, sectorsize: 4096, utc: true };
    for (const list of byKind.values()) {
      for (const s of list.slice(0, 20)) {
        for (let len = 0; len < s.data.length; len += Math.max(1, s.data.length >> 5)) {
          const short = Buffer.from(s.data.subarray(0, len));
          try { decodeItem(s.key, short, { csumSize: s.csumSize }); } catch (e) {
            if (!isBtrfsError(e)) expect.fail(`${s.block} ${s.key.type}/${s.key.offset} len ${len}: ${String(e)}`);
          }
          // the printer reads damaged items as far as they go, like progs, without throwing
          printItemBody(s.key, short, { ...ctx, csumSize: s.csumSize });
        }
      }
    }
  });

  it('attaches the key to decode errors', () => {
    const k = key(256n, KEY.INODE_ITEM, 0n);
    try {
      decodeItem(k, Buffer.alloc(100), { csumSize: 4 });
      expect.fail('no error');
    } catch (e) {
      expect(isBtrfsError(e, 'EUCLEAN')).to.equal(true);
      expect((e as { key?: Key }).key).to.deep.equal(k);
    }
  });

  it('dir items: the DIR_ITEM key offset is the name hash, entries carry the name', () => {
    for (const s of byKind.get('dir_item') ?? []) {
      const entries = decodeDirItems(s.data);
      expect(entries.length).to.be.greaterThan(0);
      for (const d of entries) {
        expect(nameHash(d.name)).to.equal(s.key.offset);
        // The table loop the checker uses, on the name where it lies in a larger buffer.
        const padded = Buffer.concat([Buffer.from([0xff, 0x00, 0x5a]), d.name, Buffer.from([0x17])]);
        expect(nameHashAt(padded, 3, 3 + d.name.length)).to.equal(Number(s.key.offset));
      }
    }
    for (const s of byKind.get('xattr_item') ?? []) {
      for (const d of decodeDirItems(s.data)) {
        expect(d.type).to.equal(FT.XATTR);
        expect(nameHash(d.name)).to.equal(s.key.offset);
      }
    }
  });

  it('inode extrefs: the key offset is the hash of parent and name', () => {
    const list = byKind.get('inode_extref') ?? [];
    expect(list.length).to.be.greaterThan(0);
    for (const s of list) {
      if (s.item.kind !== 'inode_extref') continue;
      for (const r of s.item.value) expect(extrefHash(r.parent, r.name)).to.equal(s.key.offset);
    }
  });

  it('keyed EXTENT_DATA_REF: the key offset is the hash of root, objectid, offset', () => {
    const list = byKind.get('extent_data_ref') ?? [];
    expect(list.length).to.be.greaterThan(0);
    for (const s of list) {
      if (s.item.kind !== 'extent_data_ref') continue;
      const r = s.item.value;
      expect(extentDataRefHash(r.root, r.objectid, r.offset)).to.equal(s.key.offset);
    }
  });

  it('extent items: tree_block_info only in non-skinny tree blocks, inline refs of every kind', () => {
    const seen = new Set<number>();
    let infos = 0;
    for (const s of [...(byKind.get('extent_item') ?? []), ...(byKind.get('metadata_item') ?? [])]) {
      if (s.item.kind !== 'extent_item' && s.item.kind !== 'metadata_item') continue;
      const e = s.item.value;
      if (e.treeBlockInfo) infos++;
      if (s.item.kind === 'metadata_item') expect(e.treeBlockInfo).to.equal(undefined);
      for (const r of e.inlineRefs) seen.add(r.type);
    }
    expect(infos).to.be.greaterThan(0);
    expect([...seen].sort()).to.include.members([KEY.TREE_BLOCK_REF, KEY.SHARED_BLOCK_REF, KEY.EXTENT_DATA_REF, KEY.SHARED_DATA_REF]);
  });

  it('file extents: inline, regular, prealloc and every compression', () => {
    const types = new Set<number>();
    const comps = new Set<number>();
    for (const s of byKind.get('file_extent_item') ?? []) {
      if (s.item.kind !== 'file_extent_item') continue;
      types.add(s.item.value.type);
      comps.add(s.item.value.compression);
    }
    expect([...types].sort()).to.deep.equal([0, 1, 2]);
    expect([...comps].sort()).to.deep.equal([0, 1, 2, 3]);
  });

  it('csum items of every checksum size', () => {
    const sizes = new Set((byKind.get('extent_csum') ?? []).map((s) => s.csumSize));
    expect([...sizes].sort((a, b) => a - b)).to.deep.equal([4, 8, 32]);
  });

  it('uuid keys: the key halves are the uuid', () => {
    for (const s of byKind.get('uuid_subvol') ?? []) {
      const u = uuidFromKey(s.key);
      expect(uuidKeyParts(u)).to.deep.equal({ objectid: s.key.objectid, offset: s.key.offset });
    }
  });
});

describe('format/items: forms the stored blocks lack', () => {
  it('root item: the old 239-byte form decodes with zeroed extended fields', () => {
    const full = (byKind.get('root_item') ?? [])[0]!;
    const short = full.data.subarray(0, ROOT_ITEM_V0_SIZE);
    const r = decodeRootItem(short);
    expect(r.itemSize).to.equal(ROOT_ITEM_V0_SIZE);
    expect(r.generation_v2).to.equal(0n);
    expect(r.uuid.equals(Buffer.alloc(16))).to.equal(true);
    expect(encodeRootItem(r).equals(short)).to.equal(true);
    expect(encodeRootItem(r, ROOT_ITEM_SIZE).length).to.equal(ROOT_ITEM_SIZE);
    expect(() => decodeRootItem(full.data.subarray(0, ROOT_ITEM_V0_SIZE - 1))).to.throw().with.property('code', 'EUCLEAN');
    expect(INODE_ITEM_SIZE).to.equal(160);
  });

  it('extent item: EXTENT_OWNER_REF inline, and unknown refs', () => {
    const b = Buffer.alloc(24 + 9 + 9);
    b.writeBigUInt64LE(1n, 0); b.writeBigUInt64LE(9n, 8); b.writeBigUInt64LE(1n, 16);
    b[24] = KEY.EXTENT_OWNER_REF; b.writeBigUInt64LE(257n, 25);
    b[33] = KEY.TREE_BLOCK_REF; b.writeBigUInt64LE(5n, 34);
    const e = decodeExtentItem(b);
    expect(e.inlineRefs).to.deep.equal([{ type: KEY.EXTENT_OWNER_REF, root: 257n }, { type: KEY.TREE_BLOCK_REF, root: 5n }]);
    expect(encodeExtentItem(e).equals(b)).to.equal(true);
    b[33] = 99;
    expect(() => decodeExtentItem(b)).to.throw().with.property('code', 'EUCLEAN');
    const lenient = decodeExtentItem(b, { stopAtUnknown: true });
    expect(lenient.inlineRefs.length).to.equal(1);
    expect(lenient.unparsed?.length).to.equal(9);
    expect(encodeExtentItem(lenient).equals(b)).to.equal(true);
  });

  it('file extent: regular items must be 53 bytes, inline ones any length', () => {
    const b = Buffer.alloc(FILE_EXTENT_INLINE_DATA_START + 3);
    b[20] = 0;
    b.write('abc', FILE_EXTENT_INLINE_DATA_START);
    const fe = decodeFileExtentItem(b);
    expect(fe.type).to.equal(0);
    expect(encodeFileExtentItem(fe).equals(b)).to.equal(true);
    b[20] = 1;
    expect(() => decodeFileExtentItem(b)).to.throw().with.property('code', 'EUCLEAN');
    expect(() => decodeFileExtentItem(Buffer.alloc(20))).to.throw().with.property('code', 'EUCLEAN');
  });

  it('balance item: 448 bytes, round trip', () => {
    const real = (byKind.get('balance_item') ?? [])[0];
    const b = real ? real.data : Buffer.alloc(BALANCE_ITEM_SIZE, 7);
    expect(b.length).to.equal(BALANCE_ITEM_SIZE);
    const v = decodeBalanceItem(b);
    expect(encodeBalanceItem(v).equals(b)).to.equal(true);
    expect(balanceUsage(v.data)).to.equal(BigInt(v.data.usage_min) + (BigInt(v.data.usage_max) << 32n));
  });

  it('qgroup status: simple-quota form with enable_gen', () => {
    const b = Buffer.alloc(40);
    b.writeBigUInt64LE(1n, 0); b.writeBigUInt64LE(12n, 32);
    const s = decodeQgroupStatus(b);
    expect(s.enable_gen).to.equal(12n);
    expect(encodeQgroupStatus(s).equals(b)).to.equal(true);
    expect(() => decodeQgroupStatus(Buffer.alloc(36))).to.throw().with.property('code', 'EUCLEAN');
    const id = qgroupId(1, 100n);
    expect([qgroupLevel(id), qgroupSubvolid(id)]).to.deep.equal([1, 100n]);
  });

  it('dir items: several entries in one item round trip', () => {
    const entries = [
      { location: key(257n, KEY.INODE_ITEM, 0n), transid: 7n, type: FT.REG_FILE, name: Buffer.from('a'), data: Buffer.alloc(0) },
      { location: key(0n, 0, 0n), transid: 8n, type: FT.XATTR, name: Buffer.from('user.x'), data: Buffer.from('value') },
    ];
    const b = encodeDirItems(entries);
    expect(decodeDirItems(b)).to.deep.equal(entries);
  });

  it('free space bitmap: set bits are free sectors', () => {
    const bm = Buffer.from([0b00000110, 0b10000000]);
    expect(bitmapRanges(bm, 1000n, 10)).to.deep.equal([{ start: 1010n, length: 20n }, { start: 1150n, length: 10n }]);
  });

  it('dev replace item is 72 bytes; orphan and relation items are empty', () => {
    expect(DEV_REPLACE_ITEM_SIZE).to.equal(72);
    expect(() => decodeItem(key(OBJ.ORPHAN, KEY.ORPHAN_ITEM, 5n), Buffer.alloc(1), { csumSize: 4 })).to.throw().with.property('code', 'EUCLEAN');
    expect(decodeItem(key(OBJ.ORPHAN, KEY.ORPHAN_ITEM, 5n), Buffer.alloc(0), { csumSize: 4 }).kind).to.equal('orphan_item');
    expect(decodeItem(key(1n, 230, 0n), Buffer.alloc(3), { csumSize: 4 }).kind).to.equal('unknown');
    expect(decodeItem(key(OBJ.DEV_STATS, KEY.PERSISTENT_ITEM, 1n), Buffer.alloc(40), { csumSize: 4 }).kind).to.equal('dev_stats');
    expect(decodeItem(key(OBJ.BALANCE, KEY.TEMPORARY_ITEM, 0n), Buffer.alloc(448), { csumSize: 4 }).kind).to.equal('balance_item');
  });
});
