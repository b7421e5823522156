#!/usr/bin/env bash
# Reproduce the model version shipped in triton_models/ with radpair's own pipeline:
# a synthetic cohort, k-fold fine-tuning with triton_models/shipped_model.toml, then export.
#   triton_models/make_model.sh                 # what `make model` runs
#   N=8 SIZE="24 48 48" REPO=/tmp/repo WORK=/tmp/w triton_models/make_model.sh --set finetune.epochs=1
# Extra arguments go to `radpair train finetune` (e.g. --set overrides).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
radpair="${RADPAIR:-$here/../.venv/bin/radpair}"
repo="${REPO:-$here}"
work="${WORK:-$here/../build/model}"
n="${N:-64}"
size="${SIZE:-64 64 64}"

rm -rf "$work"
mkdir -p "$work"
# shellcheck disable=SC2086 # SIZE is three numbers
"$radpair" cohort --out "$work/cohort" --n "$n" --seed 7 --size $size
"$radpair" train finetune --cohort "$work/cohort" --out "$work/run" --train-config "$here/shipped_model.toml" \
    --device cpu "$@"
"$radpair" export "$work/run" --repo "$repo"
