"""One table from finished agent runs: each run directory's last evaluation, side by side.

For seeds and ablations trained one command each (e.g. the README's CueCorridor rows):

    cwworld train --config cue_corridor_plan --run-dir runs/plan_s4 train.seed=4
    cwworld train --config cue_corridor_plan --run-dir runs/rssm_s1 train.seed=1 \
        model.levels=1 model.deter=257 model.hidden=257 model.level_reward_heads=false
    python benchmarks/agent_runs.py runs/plan_s4 runs/rssm_s1

Reads ``RUN/config.yaml`` and ``RUN/metrics.jsonl`` only (no model is loaded, nothing runs).
Columns: the world model (levels, k, deter), its seed, the updates of the evaluated step, the
evaluation's success rate, mean return and episode length (``agent.eval_episodes`` greedy
episodes), environment steps in the replay, and the training minutes logged by the run
(``train_minutes``; an interrupted and resumed run counts only its time training). Runs without
an evaluation are listed with dashes. ``--json`` prints the rows as JSON lines instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cwworld.config import load_config


def last_eval(metrics: Path) -> dict:
    """The last record of ``metrics`` that holds ``eval/success``, or {} when none does."""
    found: dict = {}
    with open(metrics) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{metrics}: line {number} is not JSON ({error.msg})") from None
            if "eval/success" in record:
                found = record
    return found


def run_row(run: Path) -> dict:
    """The summary of one run directory (see the module docstring)."""
    for name in ("config.yaml", "metrics.jsonl"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run}: no {name} (not a cwworld training run?)")
    config = load_config(run / "config.yaml")
    record = last_eval(run / "metrics.jsonl")
    model = config.model
    return {"run": str(run), "levels": model.levels, "factor": model.factor if model.levels > 1 else None,
            "deter": model.deter, "seed": config.train.seed, "agent": config.agent.kind,
            "step": record.get("step"), "success": record.get("eval/success"), "return": record.get("eval/return"),
            "length": record.get("eval/length"), "env_steps": record.get("replay_steps"),
            "train_minutes": record.get("train_minutes")}


def cell(value, spec: str) -> str:
    """``value`` formatted by ``spec`` for a table cell, ``-`` for None."""
    return "-" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of cwworld train")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    args = parser.parse_args(argv)
    rows = [run_row(run) for run in args.runs]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print("| run | world model | seed | agent | updates | success | mean return | length | env steps | train min |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        model = f"{r['levels']} levels, k = {r['factor']}" if r["levels"] > 1 else "1 level (RSSM)"
        print(f"| {r['run']} | {model}, deter {r['deter']} | {r['seed']} | {r['agent']} | {cell(r['step'], 'd')} | "
              f"{cell(r['success'], '.0%')} | {cell(r['return'], '.2f')} | {cell(r['length'], '.1f')} | "
              f"{cell(r['env_steps'], ',.0f')} | {cell(r['train_minutes'], '.1f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
