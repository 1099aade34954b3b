#!/usr/bin/env python3
"""Regenerates the compressed-extent test vectors in this directory.

Needs root, btrfs-progs and a kernel with btrfs: the point of the vectors is
that the kernel itself compressed them, so nothing here compresses anything.
For each mount option it formats a scratch image, writes a fixed set of files
through the kernel, then cuts every compressed extent (regular and inline)
back out of the image and records the plaintext's sha256 next to it.

Usage: sudo python3 make-vectors.py [scratch-dir]
"""
import gzip, hashlib, json, os, random, re, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRATCH = sys.argv[1] if len(sys.argv) > 1 else '/tmp/h2-vectors'
MODES = ['zlib', 'zlib:1', 'lzo', 'zstd', 'zstd:15']
# Whole-image budget: vectors are kept per mode until this many compressed
# bytes are stored, so the directory stays small.
PER_MODE_BUDGET = 300_000
# Extents kept per file; the rest of a large file's extents look alike.
PER_FILE = {'zeros-1m.bin': 1, 'text-300k.txt': 1, 'mixed-1.3m.bin': 1}


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw).stdout


def words(rng, n):
    vocab = ['btrfs', 'extent', 'subvolume', 'snapshot', 'checksum', 'chunk', 'leaf', 'node',
             'inode', 'the', 'of', 'and', 'a', 'to', 'in', 'is', 'copy-on-write', 'tree',
             'generation', 'transid', 'device', 'stripe', 'RAID1', 'metadata', 'data']
    out = []
    size = 0
    while size < n:
        w = rng.choice(vocab) + (str(rng.randrange(1000)) if rng.random() < 0.1 else '')
        out.append(w)
        size += len(w) + 1
        if rng.random() < 0.08:
            out.append('\n')
    return (' '.join(out).encode())[:n]


def files():
    """name -> bytes; deterministic so the expected hashes are reproducible."""
    rng = random.Random(20240611)
    f = {}
    f['text-300k.txt'] = words(rng, 300_001)
    f['zeros-1m.bin'] = bytes(1024 * 1024 + 123)
    # Half incompressible, half text, interleaved in odd-sized pieces so some
    # compressed chunks barely shrink.
    mixed = bytearray()
    while len(mixed) < 1_300_000:
        mixed += rng.randbytes(rng.randrange(100, 3000))
        mixed += words(rng, rng.randrange(100, 6000))
    f['mixed-1.3m.bin'] = bytes(mixed)
    f['random-20k.bin'] = rng.randbytes(20_000)
    f['tail-12305.txt'] = words(rng, 4096 * 3 + 17)
    f['inline-3000.txt'] = words(rng, 3000)
    f['inline-200.txt'] = b'abc' * 66 + b'xy'
    f['inline-zeros-4000.bin'] = bytes(4000)
    # Few repeats: compressed size close to the input, so LZO segments are
    # close to a sector long and their headers often fall near a sector end.
    semi = bytearray()
    while len(semi) < 2_000_000:
        semi += rng.randbytes(rng.randrange(20, 200))
        semi += bytes([rng.randrange(256)]) * rng.randrange(4, 60)
    f['semi-2m.bin'] = bytes(semi)
    # Only searched for an LZO extent whose segment header had to skip to the
    # next sector (fewer than 4 bytes left): each segment end has a ~3/4096
    # chance of it, so this needs a few thousand segments.
    hunt = bytearray()
    while len(hunt) < 48_000_000:
        hunt += rng.randbytes(rng.randrange(20, 120))
        hunt += bytes([rng.randrange(256)]) * rng.randrange(4, 90)
    f['pad-hunt-48m.bin'] = bytes(hunt)
    return f


def lzo_paddings(raw, sectorsize=4096):
    total = int.from_bytes(raw[:4], 'little')
    cur, pads = 4, 0
    while cur < total:
        cur += 4 + int.from_bytes(raw[cur:cur + 4], 'little')
        left = sectorsize - cur % sectorsize
        if left < 4:
            pads += 1
            cur += left
    return pads


def parse_dump(text):
    """Yields (inode, file_offset, item) for every EXTENT_DATA item."""
    leaf = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        m = re.match(r'\s*leaf (\d+) items', ln)
        if m:
            leaf = int(m.group(1))
        m = re.match(r'\s*item \d+ key \((\d+) EXTENT_DATA (\d+)\) itemoff (\d+) itemsize (\d+)', ln)
        if m:
            ino, foff, itemoff, itemsize = map(int, m.groups())
            body = '\n'.join(lines[i + 1:i + 6])
            item = {'leaf': leaf, 'itemoff': itemoff, 'itemsize': itemsize}
            mi = re.search(r'inline extent data size (\d+) ram_bytes (\d+) compression (\d+)', body)
            if mi:
                item.update(kind='inline', size=int(mi.group(1)), ram=int(mi.group(2)),
                            comp=int(mi.group(3)))
            else:
                md = re.search(r'disk byte (\d+) nr (\d+)', body)
                mo = re.search(r'extent data offset (\d+) nr (\d+) ram (\d+)', body)
                mc = re.search(r'extent compression (\d+)', body)
                item.update(kind='regular', disk=int(md.group(1)), disk_len=int(md.group(2)),
                            off=int(mo.group(1)), num=int(mo.group(2)), ram=int(mo.group(3)),
                            comp=int(mc.group(1)))
            yield ino, foff, item
        i += 1


def chunk_map(img):
    """(logical start, length, physical of stripe 0) for every chunk; single
    device, so stripe 0 of a SINGLE or DUP chunk holds the data."""
    dump = run('btrfs', 'inspect-internal', 'dump-tree', '-t', 'chunk', img).decode()
    out = []
    for m in re.finditer(r'CHUNK_ITEM (\d+)\) itemoff \d+ itemsize \d+\n\s+length (\d+).*?stripe 0 devid \d+ offset (\d+)',
                         dump, re.S):
        out.append(tuple(map(int, m.groups())))
    return out


def read_logical(img, logical, length, chunks):
    for start, size, phys in chunks:
        if start <= logical and logical + length <= start + size:
            with open(img, 'rb') as fh:
                fh.seek(phys + logical - start)
                data = fh.read(length)
            assert len(data) == length
            return data
    raise ValueError(f'logical {logical} not in one chunk')


def main():
    os.makedirs(SCRATCH, exist_ok=True)
    content = files()
    index = []
    for mode in MODES:
        img = os.path.join(SCRATCH, 'img')
        mnt = os.path.join(SCRATCH, 'mnt')
        os.makedirs(mnt, exist_ok=True)
        with open(img, 'wb') as fh:
            fh.truncate(512 * 1024 * 1024)
        run('mkfs.btrfs', '-q', '-f', img)
        run('mount', '-o', f'loop,compress-force={mode}', img, mnt)
        try:
            for name, data in content.items():
                with open(os.path.join(mnt, name), 'wb') as fh:
                    fh.write(data)
            run('sync')
            inodes = {int(os.stat(os.path.join(mnt, n)).st_ino): n for n in content}
        finally:
            run('umount', mnt)
        dump = run('btrfs', 'inspect-internal', 'dump-tree', '-t', '5', img).decode()
        chunks = chunk_map(img)
        nodesize = int(re.search(r'nodesize\s+(\d+)',
                                 run('btrfs', 'inspect-internal', 'dump-super', img).decode()).group(1))
        stored = 0
        seen = set()
        per_file = {}
        for ino, foff, it in parse_dump(dump):
            if it['comp'] == 0 or ino not in inodes:
                continue
            name = inodes[ino]
            plain_src = content[name]
            if it['kind'] == 'inline':
                leaf = read_logical(img, it['leaf'], nodesize, chunks)
                start = 101 + it['itemoff'] + 21
                raw = leaf[start:101 + it['itemoff'] + it['itemsize']]
                assert len(raw) == it['size']
                plain = plain_src[foff:foff + it['ram']]
            else:
                if it['disk'] in seen:
                    continue
                seen.add(it['disk'])
                raw = read_logical(img, it['disk'], it['disk_len'], chunks)
                start = foff - it['off']
                plain = plain_src[start:start + it['ram']]
            plain = plain + bytes(it['ram'] - len(plain))
            if name == 'pad-hunt-48m.bin':
                if it['comp'] != 2 or it['kind'] != 'regular' or per_file.get(name) or not lzo_paddings(raw):
                    continue
            per_file[name] = per_file.get(name, 0) + 1
            if name != 'pad-hunt-48m.bin' and (per_file[name] > PER_FILE.get(name, 2) or stored + len(raw) > PER_MODE_BUDGET):
                continue
            stored += len(raw)
            tag = mode.replace(':', '-')
            fname = f'{tag}-{name}-{foff}.bin.gz'
            with open(os.path.join(HERE, fname), 'wb') as fh:
                fh.write(gzip.compress(raw, 9, mtime=0))
            index.append({
                'file': fname, 'mount': f'compress-force={mode}', 'type': it['comp'],
                'kind': it['kind'], 'source': name, 'fileOffset': foff,
                'compressedLen': len(raw), 'ramBytes': it['ram'], 'sectorsize': 4096,
                'sha256': hashlib.sha256(plain).hexdigest(),
            })
    with open(os.path.join(HERE, 'index.json'), 'w') as fh:
        json.dump({'kernel': os.uname().release, 'vectors': index}, fh, indent=1)
        fh.write('\n')


if __name__ == '__main__':
    main()
