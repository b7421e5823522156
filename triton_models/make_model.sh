#!/usr/bin/env bash
# Reproduce the model version shipped in triton_models/ with radpair's own pipeline, the way a
# site's archive would train it: a synthetic cohort (image + report pairs, a few lesion-free),
# contrastive pre-training on every pair, k-fold fine-tuning from it (operating points chosen on
# the out-of-fold predictions), then export. The model replaces the one in REPO: a changed output
# signature (the lesion probability) cannot be a next version of the old one.
#   triton_models/make_model.sh                 # what `make model` runs (~35 min on 2 CPU cores)
#   N=12 REPO=/tmp/repo WORK=/tmp/w triton_models/make_model.sh --set pretrain.epochs=1 --set finetune.epochs=1
# Extra arguments go to both `radpair train` steps (e.g. --set overrides).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
radpair="${RADPAIR:-$here/../.venv/bin/radpair}"
repo="${REPO:-$here}"
work="${WORK:-$here/../build/model}"
n="${N:-480}"
config="$here/shipped_model.toml"

rm -rf "$work"
mkdir -p "$work"
"$radpair" cohort --out "$work/cohort" --n "$n" --seed 7 --lesion-free-fraction 0.15
"$radpair" train pretrain --cohort "$work/cohort" --out "$work/pretrain" --train-config "$config" --device cpu "$@"
"$radpair" train finetune --cohort "$work/cohort" --out "$work/run" --train-config "$config" --device cpu \
    --init "$work/pretrain" "$@"
"$radpair" export "$work/run" --repo "$work/repo"
name="$(cd "$work/repo" && ls -d */ | grep -v _libtorch/ | head -1 | tr -d /)"
rm -rf "${repo:?}/$name" "${repo:?}/${name}_libtorch"
cp -a "$work/repo/$name" "$work/repo/${name}_libtorch" "$repo/"
