"""Train the bundled diabetes regressor: disease progression one year after baseline.

The data is scikit-learn's diabetes table (442 patients, ten baseline measurements),
shipped inside scikit-learn (no download). Its columns come already centred and scaled,
and ``sex`` is a float with two values; the spec keeps it a number. The example shows
per-feature transforms (minmax, passthrough, standardize by default) on a gradient-boosted
tree model: trees split on the order of values, so these affine transforms leave the
model unchanged, whereas a penalised linear model (Ridge) would penalise a passthrough
column on its tiny native scale far harder than the standardized ones.

The model is exported to ONNX (input ``input`` float32 ``[N, 10]``; output ``variable``
float32 ``[N, 1]``, skl2onnx's default name for a regressor's prediction, kept as is),
checked against scikit-learn, and the histogram of its predictions on the held-out rows
is recorded as the output baseline.

Writes ``feature_specs/diabetes.yaml`` and ``models/diabetes/1/{model.onnx,spec.yaml}``.
Deterministic: re-running rewrites byte-identical spec files.
"""

from __future__ import annotations

import numpy as np
from _export import INPUT_NAME, SEED, TEST_SIZE, export_onnx, histogram, parse_args, session, summary, write_version
from msgspec.structs import replace
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from gateway import FeatureSpec

TARGET = "progression"
TRANSFORMS = {"bmi": "minmax", "s5": "passthrough"}
OUTPUT_NAME = "variable"
VALUE_BINS = 10
"""Equal-width bins of the prediction histogram: about 11 of the 111 held-out predictions
per bin (the 20 bins ``FeatureSpec.fit`` uses for the target would leave some near-empty)."""


def main() -> None:
    args = parse_args(__doc__)
    data = load_diabetes(as_frame=True).frame.rename(columns={"target": TARGET})
    train, test = train_test_split(data, test_size=TEST_SIZE, random_state=SEED)

    spec = FeatureSpec.fit(
        train,
        name="diabetes",
        target=TARGET,
        transforms=TRANSFORMS,
        on_violation="reject",
        # The committed spec was fitted with driftgate 0.1's rules: a fixed margin (the observed
        # range widened by 10% of its width; without it, by a tail estimate) and imputation only
        # where the training rows had gaps (without it, gapless columns of small data impute too).
        margin=0.1,
        missing="observed",
        description="Diabetes progression one year after baseline from age, sex, BMI, blood pressure and six "
        "blood serum measurements (scikit-learn's scaled diabetes data). Trained by examples/train_diabetes.py.",
    )
    # Small and shallow: 331 training rows of a noisy target overfit deeper or longer boosting.
    model = GradientBoostingRegressor(n_estimators=100, max_depth=2, learning_rate=0.05, random_state=SEED)
    model.fit(spec.transform(train), train[TARGET].to_numpy())

    model_bytes = export_onnx(model, len(spec.output_columns), name=spec.name)
    x_test = spec.transform(test)
    (predicted,) = session(model_bytes).run([OUTPUT_NAME], {INPUT_NAME: x_test})
    # Trees compare float32 thresholds in ONNX and sum in float32: agreement to 1e-4 on
    # values in the hundreds is a few float32 ulps.
    np.testing.assert_allclose(predicted[:, 0], model.predict(x_test), rtol=0, atol=1e-4)
    r2 = r2_score(test[TARGET], predicted[:, 0])

    # The output baseline: what the exported model predicts on rows it never saw.
    values = histogram(predicted[:, 0], VALUE_BINS)
    spec = replace(spec, output=replace(spec.output, baseline=replace(spec.output.baseline, values=values)))

    paths = write_version(spec, model_bytes, args.out_dir)
    print(summary(spec, f"test R^2 {r2:.3f} on {len(test)} held-out rows", paths, args.out_dir))


if __name__ == "__main__":
    main()
