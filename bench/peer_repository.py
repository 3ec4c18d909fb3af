"""Build the driftgate model repository that serves the peer comparison's models.

``bench/peers/`` measures every server on the same two ONNX models (``lr`` and ``gbt``,
made by ``bench/peers/make_models.py`` from scikit-learn's bundled breast_cancer data: 30
float features, input ``input`` [N, 30]). driftgate needs a feature spec for each, over
those 30 features: fitted here on the same bundled data, with ``passthrough`` transforms
(the ONNX graphs carry their own scaling), so the guards check types and ranges and
monitoring runs, exactly as in production.

    python bench/peer_repository.py [--models DIR] [--out DIR]    (bench/peers.sh runs it)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer

from gateway.registry import ModelRegistry
from gateway.repository import ModelRepository
from gateway.service import register_model
from gateway.spec import FeatureSpec, encode_spec

PEERS_HOME = Path(os.environ.get("PEERS_HOME", "/tmp/driftgate-peers"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=PEERS_HOME / "models", help="made by bench/peers/setup.sh")
    parser.add_argument("--out", type=Path, default=PEERS_HOME / "driftgate-repository", help="repository to create")
    args = parser.parse_args()
    frame = load_breast_cancer(as_frame=True).frame  # shipped inside scikit-learn
    repository = ModelRepository(args.out, create=True)
    for name in ("lr", "gbt"):
        if repository.versions(name):
            print(f"{name}: already in {args.out}")
            continue
        spec = FeatureSpec.fit(frame, name=name, target="target", numeric_transform="passthrough")
        model = (args.models / f"{name}.onnx").read_bytes()
        loaded = register_model(ModelRegistry(), repository, name, 1, model, encode_spec(spec))
        print(f"{name}: registered version {loaded.version} ({len(spec.features)} features, labels {list(spec.output.labels)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
