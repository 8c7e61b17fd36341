#!/bin/bash
# One borrowed GPU machine, about 9 minutes: the quick-start recipe trained long on three
# seeds at once (experiments/accelerator_train.py), every checkpoint scored by
# evaluate.py --nofvd on 64 prompts, then benchmarks/accelerator.py. Prints a log and
# writes $OUT/scores.json and seed 0's checkpoints (tar, split in 15 MB parts).
#
# That machine has JAX (CUDA), flax, optax, orbax, sentencepiece and absl, no
# TensorFlow, ml_collections or tensorboardX, and no network. Before the call, here:
#   W=.gpu/whl; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d $W ml_collections==1.1.0 \
#     tensorboardX==2.6.5 flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8
# then run `WHEELS=.gpu/whl bash experiments/accelerator_session.sh` there, carrying
# .gpu/whl and pretrained/t2i_tiny. The tracked pretrained/ is over the 64 MiB that may
# travel: for the call, `git rm -r -q --cached pretrained` with /pretrained/ (and /.gpu/)
# in .git/info/exclude, and `git reset -q` after. The pinned flax/optax/orbax are used
# only if the machine's own fail. Phases end at TRAIN_UNTIL / EVAL_UNTIL / ACC_UNTIL seconds.
set -u
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=/tmp/jc JAX_DEFAULT_MATMUL_PRECISION=highest
T0=$(date +%s)
TRAIN_UNTIL=${TRAIN_UNTIL:-225} EVAL_UNTIL=${EVAL_UNTIL:-335} ACC_UNTIL=${ACC_UNTIL:-540} EVERY=${EVERY:-800}
WHEELS=${WHEELS:-.gpu/whl}
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( $1 - ($(date +%s) - T0) )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/mlc $WHEELS/ml_collections-*.whl $WHEELS/tensorboardx-*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pinned $WHEELS/*.whl
export PYTHONPATH=/tmp/mlc
python3 -c "import jax, flax, optax, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"

train() {  # seed deadline_s
  local w=/tmp/w/s$1 a="--config=configs/tiny.py:stage=stunet --config.seed=$1 --config.train.num_steps=20000 --config.train.ckpt_every=$EVERY --config.train.keep=100"
  timeout $(left $2) python3 experiments/accelerator_train.py $a --workdir=$w > /tmp/train_s$1.log 2>&1
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && ! grep -q "compiled the train step" /tmp/train_s$1.log; then
    echo "seed $1 failed ($rc) with the machine's flax/orbax; retrying with pinned wheels"; tail -5 /tmp/train_s$1.log
    touch /tmp/use_pinned
    PYTHONPATH=/tmp/pinned timeout $(left $2) python3 experiments/accelerator_train.py $a --workdir=$w >> /tmp/train_s$1.log 2>&1
  fi
}
el "training seeds 0 1 2 until $TRAIN_UNTIL s"
pids=""; for s in 0 1 2; do train $s $TRAIN_UNTIL & pids="$pids $!"; done; wait $pids
[ -e /tmp/use_pinned ] && export PYTHONPATH=/tmp/pinned
for s in 0 1 2; do echo "--- seed $s"; grep -v "^step " /tmp/train_s$s.log | tail -12; grep "^step " /tmp/train_s$s.log | tail -2; done
ls /tmp/w/s*/checkpoints

evalseed() {  # seed deadline_s
  local all=$(ls /tmp/w/s$1/checkpoints | grep -E '^[0-9]+$' | sort -n)
  for st in $(for x in $all; do [ $(( x % (2 * EVERY) )) -eq 0 ] && echo $x; done) \
            $(for x in $all; do [ $(( x % (2 * EVERY) )) -eq $EVERY ] && echo $x; done); do
    [ $(left $2) -gt 15 ] || break
    timeout $(left $2) python3 evaluate.py --workdir=/tmp/w/s$1 --step=$st --num_samples=64 --seed=1234 --nofvd --batch_size=32 --output_dir=/tmp/ev/s$1_$st > /tmp/ev_s$1_$st.log 2>&1 || tail -3 /tmp/ev_s$1_$st.log
  done
}
el "scoring until $EVAL_UNTIL s"
pids=""; for s in 0 1 2; do evalseed $s $EVAL_UNTIL & pids="$pids $!"; done; wait $pids
python3 - <<'EOF' > $OUT/scores.json
import glob, json, os
out = {}
for f in sorted(glob.glob('/tmp/ev/*/scores.json')):
  d = json.load(open(f)); s = d['scores']
  out[os.path.basename(os.path.dirname(f))] = dict(color=s['color_acc'], shape=s['shape_acc'], motion=s['motion_acc'], all=s['all_acc'], n=s['n'], frame_change=d['frame_change']['mean'], by_motion={k: v['acc'] for k, v in s['by_motion'].items()})
print(json.dumps(out, indent=1))
EOF
python3 -c "import json; [print(k, v['color'], v['shape'], v['motion'], v['all'], round(v['frame_change'], 4)) for k, v in json.load(open('$OUT/scores.json')).items()]"
el "exporting checkpoints"
for st in $(( 4 * EVERY )) $(( 8 * EVERY )); do
  [ -d /tmp/w/s0/checkpoints/$st ] && tar -C /tmp/w/s0 -cf - config.json checkpoints/$st | split -b 15M - $OUT/s0_$st.tar.
done
ls -la $OUT
el "accelerator.py until $ACC_UNTIL s"
timeout $(left $ACC_UNTIL) env -u JAX_DEFAULT_MATMUL_PRECISION python3 benchmarks/accelerator.py --steps=3 --sample_steps=2 2>&1 | grep -v "^I1\|^W1" | tail -25
el done
