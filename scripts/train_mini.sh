#!/usr/bin/env bash
# vita-mini's whole recipe after the corpus (scripts/make_mini_corpus.py): tokenizer, prepare, pack
# and the four training stages, into WORK. Rerun it after a kill: every step resumes or is skipped
# when its output is complete. Run from the repository root, with the venv's `vita` on PATH.
#   scripts/train_mini.sh CORPUS_DIR WORK_DIR [THREADS] [SEED]   (SEED: default the recipe's, 42)
set -euo pipefail
corpus=$(realpath "$1"); work=$(realpath -m "$2"); threads=${3:-2}
seed=(); [ -n "${4:-}" ] && seed=(--seed "$4")
export OMP_NUM_THREADS=$threads
mkdir -p "$work"
sed "s#^wavs/#$corpus/wavs/#" "$corpus/train.tsv" > "$work/train.tsv"
mkdir -p "$work/heldout"
sed "s#^wavs/#$corpus/wavs/#" "$corpus/heldout.tsv" > "$work/heldout/heldout.tsv"
cut -f2 "$work/train.tsv" > "$work/train_text.txt"
[ -f "$work/tokenizer/tokenizer.json" ] ||
  vita tokenizer build --text "$work/train_text.txt" --codec mini --vocab 300 --out "$work/tokenizer"
# prepare_and_pack LIST ROOT: LIST's pairs into ROOT/prepared/piper-tts, packed into ROOT/packed/mini
prepare_and_pack() {
  [ -f "$2/prepared/piper-tts/report.json" ] ||
    vita prepare "$1" --task tts --model "$work/tokenizer" --codec mini \
      --codec-dir vita_core/assets/vita-mini/codec --cache-dir "$work/cache" \
      --out "$2/prepared/piper-tts" --workers 1 --shard-size 400
  [ -f "$2/packed/mini/manifest.json" ] ||
    vita pack recipes/data/mini.yaml --root "$2" --out "$2/packed/mini"
}
prepare_and_pack "$work/train.tsv" "$work"
prepare_and_pack "$work/heldout/heldout.tsv" "$work/heldout"  # what --eval-data scores every checkpoint on
init=mini
for stage in 1 2 3 4; do
  run="$work/runs/s$stage"
  if [ ! -f "$run/model/config.json" ]; then
    extra=()
    [ "$stage" = 1 ] && extra=(--tokenizer "$work/tokenizer")
    vita train --stage "$stage" --recipe recipes/mini --init "$init" "${extra[@]}" \
      --data "$work/packed/mini" --eval-data "$work/heldout/packed/mini" --output-dir "$run" --save-every 100 --resume "${seed[@]}"
  fi
  init="$run/model"
done
echo "vita-mini trained: $work/runs/s4/model"
