"""What segments cost, counted rather than timed: instructions per one-row V1 answer.

Runs ``ANSWERS`` one-row V1 answers of the bundled penguins model through the direct entry
(``Dispatcher.answer_now``, guarded and monitored, as the HTTP fast path calls it) after
``WARM`` warm-up answers, with the shipped spec (``plain``) or the same spec with
``segments: [island, sex]`` fitted on the palmerpenguins data (``segmented``). Under
``valgrind --tool=callgrind`` the difference between a run of 3,000 and one of 1,000 answers,
÷ 2,000, is the instructions per answer, free of start-up and of the machine's load::

    for mode in plain segmented; do for n in 1000 3000; do
      valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$mode.$n python bench/segments_cost.py $mode $n
    done; done
    python bench/segments_cost.py --report /tmp/cg

The garbage collector is off while answering (when a full collection falls depends on
allocation counts, not on the code).
"""

from __future__ import annotations

import gc
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARM = 1000


def answers(mode: str, n: int) -> None:
    import json

    import palmerpenguins

    from gateway.codecs.v1 import V1
    from gateway.config import load_settings
    from gateway.fitting import fit_segments
    from gateway.lifecycle import Gateway
    from gateway.samples import sample_records
    from gateway.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "penguins" / "1"
        folder.mkdir(parents=True)
        source = ROOT / "models" / "penguins" / "1"
        shutil.copy(source / "model.onnx", folder / "model.onnx")
        spec = load_spec(source / "spec.yaml")
        if mode == "segmented":
            spec = fit_segments(spec, palmerpenguins.load_penguins(), ["island", "sex"])
        spec.save(folder / "spec.yaml")
        gateway = Gateway(load_settings({}, repository=tmp))
        gateway.scan()
        gateway.loaded.set()
        body = json.dumps({"instances": sample_records(spec, 1, seed=1)}).encode()
        headers = [(b"content-type", b"application/json")]
        dispatcher = gateway.dispatcher
        for _ in range(WARM):
            dispatcher.answer_now(V1, "penguins", None, headers, body)
        gc.disable()
        for _ in range(n):
            dispatcher.answer_now(V1, "penguins", None, headers, body)
        gc.enable()


def report(prefix: str) -> None:
    def total(path: str) -> int:
        text = Path(path).read_text(errors="replace")
        return sum(int(m) for m in re.findall(r"^summary: (\d+)", text, flags=re.MULTILINE)) or int(
            re.search(r"^totals: (\d+)", text, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
        )

    per = {mode: (total(f"{prefix}.{mode}.3000") - total(f"{prefix}.{mode}.1000")) / 2000 for mode in ("plain", "segmented")}
    print("| spec | instructions per one-row V1 answer |\n|---|---:|")
    for mode, value in per.items():
        print(f"| {mode} | {value:,.0f} |")
    print(f"\nsegmented / plain: {per['segmented'] / per['plain']:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2])
    else:
        answers(sys.argv[1], int(sys.argv[2]))
