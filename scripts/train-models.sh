#!/usr/bin/env bash
# Trains the bundled models in models/, each with the command its model card records.
# Usage: scripts/train-models.sh [NAME...]   (default: all; needs scripts/fetch-data.sh first)
# The photo tower (about 25 minutes) trains on data/photos (scripts/fetch-data.sh photos).
# On 2 cores a seed-tower run (40 epochs) takes about 9 minutes, a compact one about 12 (MNIST,
# 20 epochs) or 25 (Fashion-MNIST, 40).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p twinscan-cli --features lab
bin=./target/release/twinscan
declare -A runs=(
  [mnist-seed-bce]="train --data data/mnist --dataset mnist --tower seed --loss bce"
  [mnist-seed-mse]="train --data data/mnist --dataset mnist --tower seed --loss mse"
  [mnist-seed-contrastive]="train --data data/mnist --dataset mnist --tower seed --loss contrastive --margin 5"
  [fashion-seed-bce]="train --data data/fashion-mnist --dataset fashion-mnist --tower seed --loss bce"
  [fashion-seed-mse]="train --data data/fashion-mnist --dataset fashion-mnist --tower seed --loss mse"
  [fashion-seed-contrastive]="train --data data/fashion-mnist --dataset fashion-mnist --tower seed --loss contrastive --margin 5"
  [mnist-compact-contrastive]="train --data data/mnist --dataset mnist --tower compact --loss contrastive --margin 5 --epochs 20"
  [fashion-compact-contrastive]="train --data data/fashion-mnist --dataset fashion-mnist --tower compact --loss contrastive --margin 5"
  [mnist-0-4-compact-proj-supcon]="train --data data/mnist --dataset mnist --classes 0-4 --tower compact-proj --loss supcon --temperature 0.1 --epochs 8 --pairs 30000"
  [fashion-0-4-compact-proj-supcon]="train --data data/fashion-mnist --dataset fashion-mnist --classes 0-4 --tower compact-proj --loss supcon --temperature 0.1 --epochs 8 --pairs 30000"
  [photo]="train-photo --data data/photos --epochs 60 --steps 40 --batch 128 --bursts 0.25 --grey-view"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${!runs[@]}")
for name in "${names[@]}"; do
  args="${runs[$name]:?unknown model $name}"
  [[ "$args" == *--epochs* ]] || args+=" --epochs 40"
  echo "== $name"
  # shellcheck disable=SC2086
  "$bin" $args --seed 1 -o "models/$name.onnx"
  scripts/plot-models.sh "$name"
done
