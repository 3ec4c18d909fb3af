"""Train the bundled digits classifier: a handwritten digit from its 8x8 grey-level image.

The data is scikit-learn's handwritten digits (1,797 images, shipped inside scikit-learn, no
download). Each of the 64 features ``px_<row>_<col>`` counts the ink pixels of a 4x4 block of
a 32x32 bitmap, an integer 0..16. The spec is fitted on the training rows (baselines, fill
values), then every pixel gets the domain it has by construction, 0..16, and one fixed
scaling, ``minmax`` over 0..16: a range fitted per pixel would refuse real digits that
reach an edge pixel the training rows left blank, and standardizing a nearly always blank
pixel would blow its rare ink up several hundredfold (3 of the 450 held-out
digits break a fitted range; the rarest pixel has a standard deviation of 0.03).

The model is a deep ensemble (Lakshminarayanan et al., 2017): ``MEMBERS`` small
multi-layer perceptrons (two hidden layers of ``HIDDEN`` units each), identical but for
their random initialisation, whose class probabilities are averaged (scikit-learn's
soft-voting ``VotingClassifier``). Averaging independently initialised nets gives better
calibrated confidence than one net, which matters to a gateway that monitors confidence.
It sits in a scikit-learn pipeline behind ``SpecTransformer``, so it learns from exactly
the matrix the gateway computes. It is the example for dynamic batching: its ONNX graph
has some 960 small operators, and the cost of one row is dominated by onnxruntime's fixed
cost per operator, which a batch pays once for all its rows, so one onnxruntime call of 32
rows costs far less than 32 (indeed than four) calls of one row; ``bench/batch_cost.py``
measures that. The exported model's confidence on the held-out rows is recorded as the
output baseline.

Writes ``feature_specs/digits.yaml`` and ``models/digits/1/{model.onnx,spec.yaml}``.
Deterministic: re-running rewrites byte-identical spec and model files. The MLPs' weights
depend on OpenBLAS's kernels, which it picks by CPU (AVX2, AVX-512...): the same fit gives
weights that differ in the last bits on an AVX-512 machine and on an AVX2 one, and so a
different model file. On x86-64 the script therefore asks OpenBLAS for its AVX2 (Haswell)
kernels, which every x86-64 server CPU of the last decade runs, unless
``OPENBLAS_CORETYPE`` is set already.
"""

from __future__ import annotations

import os
import platform

if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # before numpy loads OpenBLAS

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _export import (  # noqa: E402
    CONFIDENCE_EDGES,
    INPUT_NAME,
    SEED,
    TEST_SIZE,
    export_onnx,
    histogram,
    parse_args,
    session,
    summary,
    write_version,
)
from msgspec.structs import replace  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.ensemble import VotingClassifier  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from gateway import FeatureSpec  # noqa: E402
from gateway.estimator import SpecTransformer  # noqa: E402
from gateway.spec import MinMax  # noqa: E402

TARGET = "digit"
SIDE = 8
FEATURES = [f"px_{row}_{col}" for row in range(SIDE) for col in range(SIDE)]
PIXEL_MAX = 16
"""A feature counts the set pixels of a 4x4 block: 0 to 16."""
MEMBERS = 64
"""Networks in the ensemble. Chosen by measurement (bench/batch_cost.py, 1 intra-op
thread, AVX2): 64 members make a graph of 964 nodes (0.96 MB) whose one-row call costs
0.35 to 0.44 ms, nearly all of it onnxruntime's fixed cost per node, while 32 rows cost
0.64 to 0.72 ms, 1.6 to 1.8 times one row. A single network, however wide, is
compute-bound on such a CPU: the earlier example, one MLP of two 1,024-unit layers
(4.5 MB), cost 0.12 ms for one row and 7 to 10 times that for 32, so batching gained
little. Fitting the 64 takes 33 to 36 s with one BLAS thread; held-out accuracy is 0.980."""
HIDDEN = (32, 32)
"""Hidden layers of each member: small, so that the per-node cost, which a batch shares,
outweighs the arithmetic, which grows with the rows; wide enough for 0.98 accuracy."""


def load_data() -> pd.DataFrame:
    """The 1,797 digits: one integer column per pixel, the digit as text ("0".."9")."""
    digits = load_digits()
    frame = pd.DataFrame(digits.data.astype(np.int64), columns=FEATURES)
    frame[TARGET] = digits.target.astype(str)
    return frame


def main() -> None:
    args = parse_args(__doc__)
    data = load_data()
    train, test = train_test_split(data, test_size=TEST_SIZE, random_state=SEED, stratify=data[TARGET])

    fitted = FeatureSpec.fit(
        train,
        name="digits",
        target=TARGET,
        features=FEATURES,
        on_violation="reject",
        # The committed spec was fitted with driftgate 0.1's rules: a fixed margin (the observed
        # range widened by 10% of its width; without it, by a tail estimate) and imputation only
        # where the training rows had gaps (without it, gapless columns of small data impute too).
        margin=0.1,
        missing="observed",
        review_threshold=0.6,
        description="Handwritten digit (0-9) from an 8x8 image, 64 pixel counts 0..16 (px_<row>_<col>, "
        "row-major). scikit-learn's digits data. Trained by examples/train_digits.py.",
    )
    pixel = MinMax(low=0.0, high=float(PIXEL_MAX))
    features = tuple(replace(f, min=0, max=PIXEL_MAX, transform=pixel) for f in fitted.features)
    spec = replace(fitted, features=features)
    labels = spec.output.labels

    members = [
        # Each member stops once its training loss has gained under 1e-3 for five epochs
        # (about 110 epochs): with the default (1e-4, ten epochs) a member runs all
        # max_iter=200 epochs, twice as long, for no held-out accuracy.
        (
            f"mlp{i}",
            MLPClassifier(hidden_layer_sizes=HIDDEN, tol=1e-3, n_iter_no_change=5, max_iter=200, random_state=SEED + i),
        )
        for i in range(MEMBERS)
    ]
    # Soft voting averages the members' probabilities. flatten_transform=False: skl2onnx
    # cannot convert a VotingClassifier whose transform is flattened (the default).
    pipeline = make_pipeline(
        SpecTransformer(spec=spec),
        VotingClassifier(members, voting="soft", flatten_transform=False),
    )
    # One BLAS thread: as fast as two on a 2-core machine (and far faster when it is busy),
    # and the weights come out the same whatever the machine's core count.
    with threadpool_limits(limits=1):
        pipeline.fit(train, train[TARGET].to_numpy(dtype=str))
    model = pipeline[-1]
    # Probability column i must be label i of the spec: the gateway names columns by it.
    if tuple(model.classes_) != labels:
        raise RuntimeError(f"model classes {tuple(model.classes_)} differ from spec labels {labels}")

    model_bytes = export_onnx(model, len(spec.output_columns), name=spec.name)
    x_test = spec.transform(test)
    predicted, probabilities = session(model_bytes).run(["label", "probabilities"], {INPUT_NAME: x_test})
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(test), rtol=0, atol=1e-4)
    # float32 (ONNX) and float64 (scikit-learn) may break a near tie differently: compare
    # labels only where the top two probabilities are clearly apart.
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3
    np.testing.assert_array_equal(predicted[clear], pipeline.predict(test)[clear])
    accuracy = float(np.mean(predicted == test[TARGET].to_numpy(dtype=str)))

    confidence = histogram(probabilities.max(axis=1), CONFIDENCE_EDGES)
    spec = replace(spec, output=replace(spec.output, baseline=replace(spec.output.baseline, confidence=confidence)))

    paths = write_version(spec, model_bytes, args.out_dir)
    print(summary(spec, f"test accuracy {accuracy:.3f} on {len(test)} held-out rows", paths, args.out_dir))


if __name__ == "__main__":
    main()
