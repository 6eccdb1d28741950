#!/usr/bin/env bash
# Rebuilds cifar10-subset.tar.gz, the embedded default data set: the first 1,000 train and the
# first 100 test images of each class of ../shared/data/cifar10-jpg.tar.gz (CIFAR-10 as JPEG,
# ImageFolder layout). Byte-for-byte reproducible: sorted names, fixed owner and time, gzip -n.
#   crates/mnas-data/assets/make_subset.sh [PATH/TO/cifar10-jpg.tar.gz]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${1:-$HERE/../../../../shared/data/cifar10-jpg.tar.gz}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
tar xzf "$SRC" -C "$T"
mkdir -p "$T/cifar10-subset"
for split_n in train:1000 test:100; do
  split=${split_n%%:*}; n=${split_n##*:}
  for dir in "$T/$split"/*/; do
    class=$(basename "$dir")
    mkdir -p "$T/cifar10-subset/$split/$class"
    find "$dir" -name '*.jpg' | sort | sed -n "1,${n}p" | xargs -I{} cp {} "$T/cifar10-subset/$split/$class/"
  done
done
(cd "$T" && find cifar10-subset | LC_ALL=C sort > list &&
  tar --no-recursion --owner=0 --group=0 --numeric-owner --mtime='1970-01-01' -cf - -T list | gzip -n -9 > "$HERE/cifar10-subset.tar.gz")
echo "wrote $HERE/cifar10-subset.tar.gz ($(du -h "$HERE/cifar10-subset.tar.gz" | cut -f1))"
