"""Peak memory of `predict` against the horizon: each horizon in a fresh process.

    python benchmarks/predict_memory.py                      # quickstart model, horizons 500 and 20000
    python benchmarks/predict_memory.py --horizons 500 5000 20000 --samples 1

The predicted frames themselves are returned (float32, ``horizon x 64 x 64 x C`` per sample),
so memory must grow by that much; what must not grow with the horizon is the decoder's
working memory (frames are decoded in pieces of 256). "extra" is the peak minus the
returned frames and the 500-frame run's peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from rich.console import Console
from rich.table import Table

CHILD = """
import json, sys, torch, cwworld
from cwworld.utils import peak_rss_mib
preset, horizon, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = cwworld.CWVAE(cwworld.load_config(preset).model).eval()
context = torch.randint(0, 256, (1, 16, 64, 64, model.config.channels), dtype=torch.uint8)
frames = model.predict(context, horizon, num_samples=samples)
print(json.dumps({"peak_mib": peak_rss_mib(), "frames_mib": frames.numel() * 4 / 2**20}))
"""


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--horizons", type=int, nargs="+", default=[500, 20000])
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args(argv)
    rows = []
    for horizon in args.horizons:
        out = subprocess.run([sys.executable, "-c", CHILD, args.preset, str(horizon), str(args.samples)],
                             capture_output=True, text=True, check=True)
        rows.append({"horizon": horizon, **json.loads(out.stdout.strip().splitlines()[-1])})
    base = rows[0]["peak_mib"] - rows[0]["frames_mib"]
    table = Table(title=f"predict peak memory, {args.preset} model, 1 video x {args.samples} sample(s), CPU")
    for column in ("horizon", "peak MiB", "returned frames MiB", "extra over the first row MiB"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["horizon"]), f"{row['peak_mib']:,.0f}", f"{row['frames_mib']:,.0f}",
                      f"{row['peak_mib'] - row['frames_mib'] - base:,.0f}")
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
