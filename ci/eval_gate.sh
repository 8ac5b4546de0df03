#!/usr/bin/env bash
# CI gate: evaluate the example routers on MMLU-Pro and fail the build when a gate in the config fails.
#
#   bash ci/eval_gate.sh [CONFIG] [OUT_DIR]
#
# Defaults: examples/mmlu_pro.toml, reports/ci. Writes OUT_DIR/summary.json and OUT_DIR/report.{md,html}.
# MLflow logging goes to $MLFLOW_TRACKING_URI when set, else to a SQLite file inside OUT_DIR (so CI never
# writes mlflow.db into the checkout). Exit status: 0 all gates pass, 1 a gate failed (the message names it),
# 2 bad config or data.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-examples/mmlu_pro.toml}
OUT=${2:-reports/ci}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
if [ -z "${MLFLOW_TRACKING_URI:-}" ]; then
  export MLFLOW_TRACKING_URI="sqlite:///$(cd "$OUT" && pwd)/mlflow.db"
fi
set +e
routelab eval "$CONFIG" --json "$OUT/summary.json" --out "$OUT" --quiet
status=$?
set -e
if [ "$status" -eq 0 ]; then
  echo "eval gate: passed ($CONFIG)"
else
  echo "eval gate: FAILED with status $status ($CONFIG); see $OUT/report.md" >&2
fi
exit "$status"
