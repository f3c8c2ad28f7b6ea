#!/usr/bin/env bash
# Reproduces the shipped reference model (nnunet_vertkd/pretrained, docs/pretrained.md) with the CPU recipe
# (nnunet_vertkd/trainers/cpu_recipe.py): 24 synthetic scans (seed 0) + the real VerSe training samples
# (sub-verse005, 006, 014; sub-verse012 is held out), converted at 2 mm (vertebrae) and 4 mm (spine), then
# the spine model and the teacher in parallel (1 torch thread each), then the student distilled from the teacher.
# About 4 h on 2 CPU cores. Usage:
#   scripts/train_reference_model.sh WORKDIR [VERSE_TRAINING_FOLDER] [--export]
# VERSE_TRAINING_FOLDER defaults to ../shared/data/verse_sample/dataset-verse19training (relative to the repo).
# --export writes the result into nnunet_vertkd/pretrained (replacing the shipped files).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
EXPORT=""
ARGS=()
for a in "$@"; do if [ "$a" = "--export" ]; then EXPORT="--export"; else ARGS+=("$a"); fi; done
[ "${#ARGS[@]}" -ge 1 ] || { echo "usage: $0 WORKDIR [VERSE_TRAINING_FOLDER] [--export]" >&2; exit 2; }
WORK="$(mkdir -p "${ARGS[0]}" && cd "${ARGS[0]}" && pwd)"
REAL="${ARGS[1]:-$REPO/../shared/data/verse_sample/dataset-verse19training}"
BIN="$(dirname "$(command -v python3)")"
[ -x "$REPO/.venv/bin/vertkd_predict" ] && BIN="$REPO/.venv/bin"
export nnUNet_raw="$WORK/nnUNet_raw" nnUNet_preprocessed="$WORK/nnUNet_preprocessed" nnUNet_results="$WORK/nnUNet_results"
export nnUNet_compile=false nnUNet_extTrainer="$("$BIN/vertkd_trainer_dir")"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
cd "$WORK"

# 1. data: 24 synthetic scans (14 training, 5 validation, 5 test) + the real training samples
[ -d synthetic ] || "$BIN/vertkd_make_synthetic" synthetic --cases 24 --seed 0 -np 2
"$BIN/vertkd_convert_verse" synthetic "$REAL" -d 601 --spacing-mm 2 -np 2 --disable_progress_bar --overwrite
if ls "$nnUNet_raw"/Dataset601_*/imagesTr | grep -q "verse012"; then
  echo "sub-verse012 must stay held out: remove it from $REAL" >&2; exit 1
fi
"$BIN/nnUNetv2_plan_and_preprocess" -d 601 602 -c 3d_fullres -np 2

# 2. training (fold 'all': every case of imagesTr; the synthetic test split, imagesTs, is never trained on)
export nnUNet_n_proc_DA=0
VERTKD_NUM_THREADS=1 "$BIN/nnUNetv2_train" 602 3d_fullres all -tr VertKDSpineTrainer_cpu4mm -device cpu > spine.log 2>&1 &
SPINE=$!
VERTKD_NUM_THREADS=1 "$BIN/nnUNetv2_train" 601 3d_fullres all -tr VertKDTeacherTrainer_cpu2mm -device cpu > teacher.log 2>&1
# the student distilled from the teacher, in parallel with the teacher's fine-tuning on the real cases
VERTKD_NUM_THREADS=1 "$BIN/nnUNetv2_train" 601 3d_fullres all -tr VertKDTeacherTrainer_cpu2mm_realFT -device cpu > teacher_ft.log 2>&1 &
TEACHER_FT=$!
VERTKD_NUM_THREADS=1 "$BIN/nnUNetv2_train" 601 3d_fullres all -tr VertKDStudentTrainer_cpu2mm -device cpu > student.log 2>&1
wait $SPINE $TEACHER_FT
# the student fine-tuned on the real cases, distilled from the fine-tuned teacher
VERTKD_NUM_THREADS=2 "$BIN/nnUNetv2_train" 601 3d_fullres all -tr VertKDStudentTrainer_cpu2mm_realFT -device cpu > student_ft.log 2>&1
# a second fine-tuning round of 30 epochs (same mixture, same teacher): the shipped student
VERTKD_NUM_THREADS=2 "$BIN/nnUNetv2_train" 601 3d_fullres all -tr VertKDStudentTrainer_cpu2mm_realFT2 -device cpu > student_ft2.log 2>&1

# a long round without a teacher, 160 epochs at lr 1e-3, half of the samples real: the shipped student
VERTKD_NUM_THREADS=2 "$BIN/nnUNetv2_train" 601 3d_fullres all -tr VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3 -device cpu > student_long.log 2>&1

# 3. export (network weights only + model cards)
if [ "$EXPORT" = "--export" ]; then
  "$BIN/python" -m nnunet_vertkd.pretrained export \
    --vertebra "$nnUNet_results/Dataset601_VerSeVertebrae/VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3__nnUNetPlans__3d_fullres" \
    --spine "$nnUNet_results/Dataset602_VerSeSpine/VertKDSpineTrainer_cpu4mm__nnUNetPlans__3d_fullres" \
    --vertebra-raw "$nnUNet_raw/Dataset601_VerSeVertebrae" --spine-raw "$nnUNet_raw/Dataset602_VerSeSpine"
fi
echo "models in $nnUNet_results"
