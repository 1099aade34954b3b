#!/bin/bash
# Builds the scratch images the test blocks are cut from (needs root,
# btrfs-progs and the kernel's btrfs). Usage: make-images.sh WORKDIR
# Then pick-blocks.py chooses blocks and cut-blocks.sh extracts them.
# Everything is left as WORKDIR/*.img; nothing stays mounted.
set -eu
W=${1:?workdir}
ONLY=${2:-}   # optional: run just one section (main, small, big, mixed, fat, raid)
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
mkdir -p "$W/mnt" "$W/mnt2"
cd "$W"
M=$W/mnt
export TZ=UTC

cleanup() {
  set +e
  mountpoint -q "$M" && umount "$M"
  mountpoint -q "$W/mnt2" && umount "$W/mnt2"
  for l in $(losetup -j "$W/raid-a.img" -O NAME -n) $(losetup -j "$W/raid-b.img" -O NAME -n) $(losetup -j "$W/raid-c.img" -O NAME -n); do losetup -d "$l"; done
}
trap cleanup EXIT

# Incompressible bytes from a fixed seed: the images need not be reproducible
# byte for byte (uuids and times differ anyway), only their shapes.
rnd() { head -c "$1" /dev/urandom; }

populate_files() {
  local d=$1
  mkdir -p "$d/dir"
  echo hello > "$d/dir/inline.txt"
  rnd 300000 > "$d/dir/regular.bin"
  fallocate -l 1M "$d/dir/prealloc.bin"
  fallocate -l 1M "$d/dir/prealloc-part.bin"
  dd if=/dev/urandom of="$d/dir/prealloc-part.bin" bs=4096 seek=64 count=4 conv=notrunc status=none
  truncate -s 10M "$d/dir/sparse.bin"
  dd if=/dev/urandom of="$d/dir/sparse.bin" bs=4096 seek=1000 count=2 conv=notrunc status=none
  ln -s dir/inline.txt "$d/symlink"
  ln -s "$(printf 'x%.0s' $(seq 1 300))" "$d/longsymlink"
  ln "$d/dir/inline.txt" "$d/hardlink"
  mkfifo "$d/fifo"
  mknod "$d/chardev" c 1 3
  mknod "$d/blockdev" b 7 0
  python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$d/socket"
  touch "$d/$(printf 'n%.0s' $(seq 1 255))"
  touch "$d/unicodé-名前"
  setfattr -n user.comment -v "a comment" "$d/dir/inline.txt"
  setfattr -n user.empty "$d/dir/inline.txt"
  setfattr -n user.bin -v 0x0001020300ff "$d/dir/regular.bin"
  for f in nodatacow immutable append nodump noatime sync dirsync compress nocompress; do touch "$d/flag-$f"; done
  chattr +C "$d/flag-nodatacow"
  chattr +i "$d/flag-immutable"
  chattr +a "$d/flag-append"
  chattr +d "$d/flag-nodump"
  chattr +A "$d/flag-noatime"
  chattr +S "$d/flag-sync"
  mkdir "$d/flag-dirsync-d" && chattr +D "$d/flag-dirsync-d"
  chattr +c "$d/flag-compress"
  chattr +m "$d/flag-nocompress"
  chmod 4755 "$d/dir/regular.bin"
  chown 1000:1000 "$d/dir/prealloc.bin"
}

############ main: 16k nodes, crc32c, subvolumes, snapshots, quota, reflinks
if want main; then
rm -f main.img
truncate -s 1G main.img
mkfs.btrfs -q -L tsbtrfs-main main.img
mount -o loop main.img "$M"
populate_files "$M"
btrfs -q subvolume create "$M/sub1"
populate_files "$M/sub1"
btrfs -q subvolume create "$M/sub1/nested"
echo nested > "$M/sub1/nested/file"
mkdir "$M/many"
for i in $(seq 1 1500); do echo "file $i" > "$M/many/f$i"; done
# many reflinks to one extent: inline refs overflow into keyed EXTENT_DATA_REF items
rnd 65536 > "$M/shared.bin"
mkdir "$M/reflinks"
for i in $(seq 1 120); do cp --reflink=always "$M/shared.bin" "$M/reflinks/r$i"; done
sync
btrfs -q subvolume snapshot "$M/sub1" "$M/snap1"
btrfs -q subvolume snapshot -r "$M" "$M/snap-ro"
# modify after the snapshot so shared tree blocks are COWed (FULL_BACKREF, shared refs)
for i in $(seq 1 1500 7); do echo "changed $i" >> "$M/many/f$i"; done
echo changed >> "$M/sub1/dir/inline.txt"
mkdir "$M/recv"
btrfs -q send "$M/snap-ro" 2>/dev/null | btrfs -q receive "$M/recv"
btrfs quota enable "$M"
btrfs qgroup create 1/100 "$M"
btrfs qgroup assign --no-rescan 0/5 1/100 "$M" || true
btrfs qgroup limit 100M "$M/sub1"
btrfs qgroup limit -e 50M "$M/sub1"
btrfs quota rescan -w "$M" >/dev/null
btrfs device stats -z "$M" >/dev/null
# a deleted subvolume the cleaner has not dropped yet: big enough to take a while
btrfs -q subvolume create "$M/doomed"
for i in $(seq 1 3000); do echo "$i" > "$M/doomed/f$i"; done
# an unlinked-but-open file leaves an ORPHAN_ITEM in the fs tree
exec 9> "$M/orphan-me"
echo data >&9
rm "$M/orphan-me"
sync
btrfs -q subvolume delete "$M/doomed"
fsfreeze -f "$M"
cp --sparse=always main.img main-frozen.img
fsfreeze -u "$M"
exec 9>&-
umount "$M"
fi

############ compressed extents, one file per algorithm
if want main; then
for alg in zlib lzo zstd; do
  mount -o loop,compress-force=$alg main.img "$M"
  mkdir -p "$M/compressed"
  yes "compress me with $alg" | head -c 200000 > "$M/compressed/$alg.txt"
  yes "tiny $alg" | head -c 2000 > "$M/compressed/$alg-inline.txt"
  umount "$M"
done
fi

############ log tree: fsync and copy before the next commit
if want main; then
mount -o loop,commit=300 main.img "$M"
mkdir "$M/logged"
sync
for i in 1 2 3; do echo "log $i" > "$M/logged/l$i"; done
python3 - "$M/logged" <<'EOF'
import os, sys
d = sys.argv[1]
for n in os.listdir(d):
    fd = os.open(os.path.join(d, n), os.O_RDONLY); os.fsync(fd); os.close(fd)
fd = os.open(d, os.O_RDONLY); os.fsync(fd); os.close(fd)
EOF
cp --sparse=always main.img main-log.img
umount "$M"
fi

############ small: 4k nodes, sha256, deep trees, extrefs, free space bitmaps
if want small; then
rm -f small.img
truncate -s 512M small.img
mkfs.btrfs -q -n 4096 -s 4096 --csum sha256 -L small small.img
mount -o loop small.img "$M"
mkdir "$M/links"
echo target > "$M/links/target"
for i in $(seq 1 40); do ln "$M/links/target" "$M/links/$(printf 'L%03d' $i)$(printf 'z%.0s' $(seq 1 200))"; done
mkdir "$M/many"
for i in $(seq 1 3000); do echo "$i" > "$M/many/file-$i"; done
mkdir "$M/frag"
for i in $(seq 1 4000); do head -c 4096 /dev/zero > "$M/frag/$i"; done
sync
for i in $(seq 1 2 4000); do rm "$M/frag/$i"; done
rnd 2000000 > "$M/data.bin"
umount "$M"
fi

############ big: 64k nodes, xxhash
if want big; then
rm -f big.img
truncate -s 512M big.img
mkfs.btrfs -q -n 65536 --csum xxhash -L big big.img
mount -o loop big.img "$M"
rnd 1000000 > "$M/data.bin"
for i in $(seq 1 50); do echo "$i" > "$M/f$i"; done
umount "$M"
fi

############ mixed: blake2, mixed block groups
if want mixed; then
rm -f mixed.img
truncate -s 256M mixed.img
mkfs.btrfs -q --mixed --csum blake2 -L mixed mixed.img
mount -o loop mixed.img "$M"
rnd 500000 > "$M/data.bin"
for i in $(seq 1 50); do echo "$i" > "$M/f$i"; done
sync
umount "$M"
fi

############ fat: 4k nodes, no skinny metadata, v1 free space cache, many snapshots
if want fat; then
rm -f fat.img
truncate -s 2G fat.img
mkfs.btrfs -q -n 4096 -O ^skinny-metadata -R ^free-space-tree -L fat fat.img
mount -o loop,space_cache=v1 fat.img "$M"
btrfs -q subvolume create "$M/base"
for i in $(seq 1 2500); do echo "base file $i" > "$M/base/f$i"; done
rnd 150000000 > "$M/base/bulk.bin"
sync
# each snapshot adds a reference to every child of the subvolume's root:
# enough of them overflow the inline refs into keyed TREE_BLOCK_REF items
for i in $(seq 1 80); do btrfs -q subvolume snapshot "$M/base" "$M/s$i"; done
sync
# COW of shared blocks turns references into FULL_BACKREF / SHARED_*_REF
for i in $(seq 1 2500 3); do echo more >> "$M/base/f$i"; done
for s in 1 2 3; do for i in $(seq 1 400 5); do echo more >> "$M/s$s/f$i"; done; done
sync
umount "$M"
fi

############ raid: two devices raid1, replace, paused balance
if want raid; then
rm -f raid-a.img raid-b.img raid-c.img
truncate -s 1G raid-a.img raid-b.img raid-c.img
mkfs.btrfs -q -d raid1 -m raid1 -L raid raid-a.img raid-b.img
LA=$(losetup -f --show raid-a.img)
LB=$(losetup -f --show raid-b.img)
LC=$(losetup -f --show raid-c.img)
btrfs device scan "$LA" "$LB" >/dev/null
mount "$LA" "$M"
for i in $(seq 1 20); do rnd 4000000 > "$M/f$i"; done
sync
btrfs replace start -B -f "$LB" "$LC" "$M"
btrfs balance start --full-balance --bg "$M" >/dev/null 2>&1 || true
sleep 0.3
btrfs balance pause "$M" || true
sync
umount "$M"
losetup -d "$LA" "$LB" "$LC"
fi

echo done
