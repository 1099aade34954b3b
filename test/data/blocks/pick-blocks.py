#!/usr/bin/env python3
"""Chooses a small set of tree blocks from the scratch images that together
show every item shape dump-tree prints, cuts them out and stores them with
their expected `dump-tree -b` text.

Usage: pick-blocks.py WORKDIR OUTDIR   (after make-images.sh WORKDIR; run as root, TZ=UTC)

A block's "features" are its printed lines with numbers, uuids, names and
times masked; blocks are taken greedily by how many unseen features they add.
"""
import gzip, json, os, re, subprocess, sys

W, OUT = sys.argv[1], sys.argv[2]
ENV = dict(os.environ, TZ='UTC')
MAX_BLOCKS = 48

# image -> (nodesize, sectorsize, csum type, devices to map on)
IMAGES = {
    'main': (16384, 4096, 0), 'main-frozen': (16384, 4096, 0), 'main-log': (16384, 4096, 0),
    'small': (4096, 4096, 2), 'big': (65536, 4096, 1), 'mixed': (4096, 4096, 3),
    'fat': (4096, 4096, 0), 'raid-a': (16384, 4096, 0),
}
# a 64k block costs more space than a 4k one: prefer small blocks when the gain is equal
COST = {4096: 1.0, 16384: 1.5, 65536: 4.0}


def run(*args):
    out = subprocess.run(args, env=ENV, check=True, capture_output=True).stdout.decode('utf-8', 'surrogateescape')
    # the version banner is the command's, not part of any block's text
    return out[len('btrfs-progs v6.2\n'):] if out.startswith('btrfs-progs v') else out


def block_dump(*args):
    """dump-tree -b output from the block's first line on (multi-device
    images make progs warn about the missing device first)."""
    out = run('btrfs', 'inspect-internal', 'dump-tree', *args)
    m = re.search(r'^(leaf|node) \d+ ', out, re.M)
    return out[m.start():] if m else out


def blocks_of(text):
    cur = None
    for line in text.split('\n'):
        m = re.match(r'^(leaf|node) (\d+) ', line)
        if m and (' items ' in line):
            if cur:
                yield cur
            cur = [int(m.group(2)), [line]]
        elif cur and (line.startswith('\t') or line.startswith('fs uuid') or line.startswith('chunk uuid') or re.match(r'^(leaf|node) \d+ flags', line)):
            cur[1].append(line)
        elif cur:
            yield cur
            cur = None
    if cur:
        yield cur


def mask(line):
    line = re.sub(r'name: .*', 'name: N', line)
    line = re.sub(r'\tdata .*', '\tdata D', line)
    line = re.sub(r' name .*', ' name N', line)
    line = re.sub(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', 'U', line)
    line = re.sub(r'\(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)', '(T)', line)
    line = re.sub(r'0x[0-9a-f]{16}', 'X', line)
    line = re.sub(r'\d+', '#', line)
    return line.strip()


def features(image, lines):
    ns, _, csum = IMAGES[image]
    f = set()
    head = lines[0]
    owner = head.split(' owner ')[1]
    f.add('owner:' + ('#' if owner.isdigit() else owner))
    f.add(('node' if head.startswith('node') else 'leaf') + f':ns{ns}')
    for line in lines[1:]:
        if line.startswith('\titem '):
            m = re.search(r'key \((\S+) (\S+) ', line)
            typ = m.group(2)
            f.add('type:' + typ)
            if not m.group(1).isdigit() and not m.group(1).startswith('0x'):
                f.add('obj:' + m.group(1) + ':' + typ)
            if typ == 'EXTENT_CSUM':
                f.add(f'csum:{csum}')
        elif line.startswith('\t\t'):
            f.add(mask(line))
    return f


def physical_candidates(path, bytenr):
    """Physical offsets that may hold logical `bytenr`: btrfs-map-logical's
    answers, then (for blocks without an extent item, like log tree blocks)
    every stripe of the chunk holding it, read from the chunk tree."""
    try:
        for line in run('btrfs-map-logical', '-l', str(bytenr), path).splitlines():
            m = re.search(r'physical (\d+) device', line)
            if m:
                yield int(m.group(1))
    except subprocess.CalledProcessError:
        pass
    chunk_start = chunk_len = None
    for line in run('btrfs', 'inspect-internal', 'dump-tree', '-t', 'chunk', path).splitlines():
        m = re.search(r'key \(FIRST_CHUNK_TREE CHUNK_ITEM (\d+)\)', line)
        if m:
            chunk_start = int(m.group(1))
            continue
        m = re.match(r'\t\tlength (\d+) ', line)
        if m:
            chunk_len = int(m.group(1))
            continue
        m = re.match(r'\t\t\tstripe \d+ devid \d+ offset (\d+)', line)
        if m and chunk_start is not None and chunk_start <= bytenr < chunk_start + chunk_len:
            yield int(m.group(1)) + bytenr - chunk_start


def main():
    os.makedirs(OUT, exist_ok=True)
    cands = []
    for image in IMAGES:
        path = os.path.join(W, image + '.img')
        if not os.path.exists(path):
            continue
        text = run('btrfs', 'inspect-internal', 'dump-tree', path)
        seen = set()
        for bytenr, lines in blocks_of(text):
            if bytenr in seen:
                continue
            seen.add(bytenr)
            cands.append((image, bytenr, features(image, lines)))
    covered = set()
    chosen = []
    while len(chosen) < MAX_BLOCKS:
        best = max(cands, key=lambda c: len(c[2] - covered) / COST[IMAGES[c[0]][0]])
        gain = best[2] - covered
        if not gain:
            break
        chosen.append(best)
        covered |= best[2]
        cands.remove(best)
    left = set().union(*(c[2] for c in cands)) - covered
    print(f'{len(chosen)} blocks, {len(covered)} features; uncovered: {sorted(left)[:40]}', file=sys.stderr)

    manifest = []
    for image, bytenr, _ in sorted(chosen):
        ns, ss, csum = IMAGES[image]
        path = os.path.join(W, image + '.img')
        # btrfs-map-logical may name another image with the same fsid (or the
        # other raid device): take the first mirror whose bytes in this file
        # are the block, judged by its header bytenr and generation
        dump = block_dump('-b', str(bytenr), path)
        gen = int(re.search(r' generation (\d+) ', dump).group(1))
        raw = None
        for phys in physical_candidates(path, bytenr):
            with open(path, 'rb') as fh:
                fh.seek(phys)
                buf = fh.read(ns)
            if len(buf) == ns and int.from_bytes(buf[48:56], 'little') == bytenr and int.from_bytes(buf[80:88], 'little') == gen:
                raw = buf
                break
        if raw is None:
            print(f'skip {image} {bytenr}: no mirror in this file', file=sys.stderr)
            continue
        name = f'{image}-{bytenr}'
        with gzip.GzipFile(os.path.join(OUT, name + '.bin.gz'), 'wb', 9, mtime=0) as g:
            g.write(raw)
        entry = {'name': name, 'image': image, 'bytenr': str(bytenr), 'nodesize': ns, 'sectorsize': ss, 'csumType': csum}
        with open(os.path.join(OUT, name + '.dump.txt'), 'w', encoding='utf-8', errors='surrogateescape') as fh:
            fh.write(dump)
        entry['dump'] = name + '.dump.txt'
        manifest.append(entry)
        if ' EXTENT_CSUM ' in dump:
            # the same block with --csum-items --csum-headers
            extra = block_dump('--csum-items', '--csum-headers', '-b', str(bytenr), path)
            with open(os.path.join(OUT, name + '.csum.dump.txt'), 'w', encoding='utf-8', errors='surrogateescape') as fh:
                fh.write(extra)
            manifest.append({**entry, 'dump': name + '.csum.dump.txt', 'csumItems': True, 'csumHeaders': True})
    with open(os.path.join(OUT, 'manifest.json'), 'w') as fh:
        json.dump(manifest, fh, indent=1)
        fh.write('\n')


main()
