"""Step time of a two-process run with the SIGTERM agreement every step vs every N steps.

Several processes agree on a preemption through an all-gather of their SIGTERM flags
(``stunet.monitoring.Preemption``): a collective that the host waits on, which stalls
the queue of asynchronously dispatched steps. ``train.preemption_check_every`` runs it
every N steps only. This runs the same training as two local processes (1 CPU device
each, gloo collectives) with check_every=1 and with N, and prints the steps/s that
train.py logged (metrics.jsonl, the first window left out: it holds the warm-up).

  python benchmarks/preemption_sync.py                      # the small test model
  python benchmarks/preemption_sync.py --config=configs/tiny.py:stage=scratch --steps=60
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from stunet import monitoring  # pylint: disable=g-import-not-at-top,wrong-import-position


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run(args, check_every: int, workdir: str) -> list:
  port = _free_port()
  overrides = {'data.num_shards': 2, 'train.num_steps': args.steps,
               'train.log_every': args.log_every, 'train.ckpt_every': 10 ** 6,
               'train.preemption_check_every': check_every, 'mesh.shape': '(2,1,1)'}
  if args.data_dir:
    overrides['data.data_dir'] = args.data_dir
  env = dict(os.environ, PYTHONPATH=f'{ROOT}:{ROOT}/tests',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  procs = []
  for i in range(2):
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), f'--config={args.config}',
           f'--workdir={workdir}', *[f'--config.{k}={v}' for k, v in overrides.items()],
           f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
           f'--process_id={i}']
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate()[0] for p in procs]
  if any(p.returncode for p in procs):
    raise SystemExit(f'a process failed:\n{outs[0][-3000:]}\n{outs[1][-3000:]}')
  rates = monitoring.read_metrics(workdir)['steps_per_sec']
  return [rates[s] for s in sorted(rates)][1:]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default=f'{ROOT}/tests/small_config_file.py:scratch')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--log_every', type=int, default=50)
  parser.add_argument('--every', type=int, default=10, help='N of the second run.')
  parser.add_argument('--data_dir', default='', help='tfds data dir (default: config).')
  args = parser.parse_args()
  print(f'{args.config}, 2 processes x 1 CPU device, {args.steps} steps')
  print('| preemption_check_every | steps/s (median of windows) | ms/step |')
  print('|---|---|---|')
  for every in (1, args.every):
    with tempfile.TemporaryDirectory() as workdir:
      rates = run(args, every, workdir)
    med = statistics.median(rates)
    print(f'| {every} | {med:.2f} ({", ".join(f"{r:.2f}" for r in rates)}) | '
          f'{1000 / med:.1f} |', flush=True)


if __name__ == '__main__':
  main()
