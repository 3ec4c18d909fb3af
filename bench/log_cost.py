"""What the prediction log costs per one-row V1 answer, counted in instructions, not timed.

Runs itself under ``valgrind --tool=callgrind`` (Debian package ``valgrind``): a gateway
in process answers ``N`` one-row V1 requests of the bundled model through the dispatcher's
direct entry (``Dispatcher.answer_now``, as the HTTP protocol calls it), with the
prediction log off, and on at sample 1.0 (the writer thread included: the log is stopped,
so every record is built, compressed and written, before counting ends). Each mode runs
with 1,000 and 3,000 answers after the same warm-up; the difference ÷ 2,000 is the
instructions of one answer, all threads together, free of start-up and of the noise of a
shared machine. The garbage collector is off while counting (when a full collection falls
depends on allocation counts, not on the code).

The HTTP server's own work per request (parsing, the event loop, the socket) is not
counted, so the ratio printed is a bound: over HTTP logging costs a smaller share.

    python bench/log_cost.py                   # ~5 min under valgrind
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def answer(model_name: str, answers: int, warmup: int, log_dir: str | None) -> None:
    """The counted run: ``warmup + answers`` one-row answers, then the log stopped."""
    from gateway.codecs.v1 import V1
    from gateway.config import load_settings
    from gateway.lifecycle import Gateway
    from gateway.registry import load_model
    from gateway.samples import sample_records

    folder = ROOT / "models" / model_name / "1"
    model = load_model(model_name, 1, (folder / "model.onnx").read_bytes(), (folder / "spec.yaml").read_bytes())
    gateway = Gateway(load_settings({}, repository=str(ROOT / "models"), log_dir=log_dir))
    gateway.model_registry.add(model)
    if gateway.payloads is not None:
        # Under valgrind everything runs ~50x slower: a 0.2 s round would hold a few rows, each
        # round's gzip member paying zlib's set-up for them. A loaded server writes rounds of
        # hundreds of rows; so do these (one round per 10 s of valgrind time).
        gateway.payloads.flush_interval = 10.0
        gateway.payloads.start()
    bodies = [json.dumps({"instances": [r]}).encode() for r in sample_records(model.spec, 64, seed=1)]
    for i in range(warmup):
        gateway.dispatcher.answer_now(V1, model_name, None, [], bodies[i % 64])
    gc.collect()
    gc.disable()
    for i in range(answers):
        assert gateway.dispatcher.answer_now(V1, model_name, None, [], bodies[i % 64]) is not None
    if gateway.payloads is not None:
        gateway.payloads.stop()
        written = sum(c for (_, outcome), c in gateway.payloads.counts.items() if outcome == "written")
        assert written == warmup + answers, gateway.payloads.counts


def count(model_name: str, answers: int, warmup: int, logged: bool) -> int:
    """Instructions of one run under callgrind (every thread)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=yes",
            sys.executable, __file__, "--run", "--model", model_name, "--answers", str(answers), "--warmup", str(warmup),
        ]  # fmt: skip
        if logged:
            cmd += ["--log-dir", str(Path(tmp) / "log")]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        found = re.search(rb"^summary:\s+(\d+)", out.read_bytes(), re.MULTILINE)
        assert found, "no callgrind summary"
        return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description="prediction log cost per one-row answer, in instructions")
    parser.add_argument("--model", default="penguins")
    parser.add_argument("--answers", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        answer(args.model, args.answers, args.warmup, args.log_dir)
        return 0
    low = args.answers // 3
    per = {}
    for logged in (False, True):
        a, b = count(args.model, low, args.warmup, logged), count(args.model, args.answers, args.warmup, logged)
        per[logged] = (b - a) / (args.answers - low)
        print(f"log {'on ' if logged else 'off'}: {per[logged]:,.0f} instructions per answer", file=sys.stderr)
    print(f"| model | log off | log on (sample 1.0) | off ÷ on |\n|---|---:|---:|---:|\n"
          f"| {args.model} | {per[False]:,.0f} | {per[True]:,.0f} | {per[False] / per[True]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
