#!/usr/bin/env bash
# The main job on the built-in example: a real MNIST image pool, embedded cold then warm,
# then the questions alcli answers: which items to label next, and the whole loop on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ALCLI=.venv/bin/alcli
ROOT=data/demo
export ALCLI_CACHE_DIR="$PWD/$ROOT/cache"

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "1. An image pool: 3,000 MNIST training digits as PNG files (+ 1,000 test digits to evaluate)"
$PY examples/mnist_pool.py "$ROOT" --train 3000 --test 1000
rm -rf "$ALCLI_CACHE_DIR"   # start cold, every time, so the demo shows both runs

step "2. alcli embed, cold cache: prefetch -> decode -> MobileNetV2 (ImageNet weights, 112 px)"
$ALCLI embed "$ROOT/train" --image-size 112 --json > "$ROOT/embed-cold.json"
step "3. alcli embed again, warm cache: no model, no image read"
$ALCLI embed "$ROOT/train" --image-size 112 --json > "$ROOT/embed-warm.json"
$PY - "$ROOT" <<'PYEOF'
import json, sys
root = sys.argv[1]
cold = json.load(open(f"{root}/embed-cold.json"))
warm = json.load(open(f"{root}/embed-warm.json"))
print(f"{'':8}{'items':>8}{'embedded':>10}{'cached':>8}{'seconds':>9}{'items/s':>10}")
for name, s in (("cold", cold), ("warm", warm)):
    print(f"{name:8}{s['items']:>8}{s['embedded']:>10}{s['cached']:>8}{s['seconds']:>9.2f}{s['items_per_s']:>10,.0f}")
print(f"warm run is {cold['seconds'] / warm['seconds']:.0f}x faster")
PYEOF

step "4. alcli select: which 10 digits to label next? (100 labels so far, margin sampling)"
# 100 labels "bought" so far: every 30th training digit.
awk -F, 'NR == 1 || (NR - 2) % 30 == 0' "$ROOT/train_labels.csv" > "$ROOT/labeled_100.csv"
$ALCLI select "$ROOT/train" --image-size 112 --strategy margin --budget 10 \
  --labeled "$ROOT/labeled_100.csv" --format csv
step "5. alcli select, cold start (no labels at all): typiclust"
$ALCLI select "$ROOT/train" --image-size 112 --strategy typiclust --budget 10

step "6. alcli auto: race 7 strategies (PSHEA) until 90 % test accuracy or 1,000 labels"
rm -rf "$ROOT/auto"
$ALCLI auto "$ROOT/train" --image-size 112 --oracle "$ROOT/train_labels.csv" \
  --eval "$ROOT/test_labels.csv" --target-acc 0.90 --budget 1000 --round-size 100 \
  --out "$ROOT/auto"
step "The winner's labeled set, the round table and the learning curves are in $ROOT/auto/:"
ls -1 "$ROOT/auto" >&2
