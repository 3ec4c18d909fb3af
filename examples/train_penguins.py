"""Train the bundled penguins classifier: species from island, body measurements, sex and year.

The data is the Palmer penguins table shipped inside the ``palmerpenguins`` package (no
download). The feature spec is fitted on the training rows, so its scaling parameters and
drift baselines describe exactly what the model learnt from; it imputes the real missing
measurements and sexes. A logistic regression is trained on ``spec.transform(train)`` --
the same code the gateway runs on every request -- exported to ONNX, checked against
scikit-learn, and its confidence on the held-out rows is recorded as the output baseline.

Writes ``feature_specs/penguins.yaml`` and ``models/penguins/1/{model.onnx,spec.yaml}``.
Deterministic: re-running rewrites byte-identical spec files.
"""

from __future__ import annotations

import numpy as np
from _export import (
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
from msgspec.structs import replace
from palmerpenguins import load_penguins
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from gateway import FeatureSpec

TARGET = "species"
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]


def main() -> None:
    args = parse_args(__doc__)
    data = load_penguins()[[*FEATURES, TARGET]]
    # Stratified so that the rarest species (Chinstrap, 68 rows) is in both parts.
    train, test = train_test_split(data, test_size=TEST_SIZE, random_state=SEED, stratify=data[TARGET])

    spec = FeatureSpec.fit(
        train,
        name="penguins",
        target=TARGET,
        features=FEATURES,
        # A value outside the training range (widened 10%) or an unknown island is more
        # likely a unit or data-entry error than a new penguin: refuse it, don't guess.
        on_violation="reject",
        # The committed spec was fitted with driftgate 0.1's rules: a fixed margin (the observed
        # range widened by 10% of its width; without it, by a tail estimate) and imputation only
        # where the training rows had gaps (without it, gapless columns of small data impute too).
        margin=0.1,
        missing="observed",
        review_threshold=0.6,
        description="Penguin species (Adelie, Chinstrap, Gentoo) from island, bill, flipper, body mass, sex "
        "and year. Trained by examples/train_penguins.py on the Palmer penguins data.",
    )
    labels = spec.output.labels
    model = LogisticRegression(max_iter=1000, random_state=SEED)
    model.fit(spec.transform(train), train[TARGET].to_numpy(dtype=str))
    # Probability column i must be label i of the spec: the gateway names columns by it.
    if tuple(model.classes_) != labels:
        raise RuntimeError(f"model classes {tuple(model.classes_)} differ from spec labels {labels}")

    model_bytes = export_onnx(model, len(spec.output_columns), name=spec.name)
    x_test = spec.transform(test)
    predicted, probabilities = session(model_bytes).run(["label", "probabilities"], {INPUT_NAME: x_test})
    np.testing.assert_allclose(probabilities, model.predict_proba(x_test), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predicted, model.predict(x_test))
    accuracy = float(np.mean(predicted == test[TARGET].to_numpy(dtype=str)))

    # The output baseline: confidence of the exported model itself on rows it never saw,
    # which is what live confidence will be compared with. Class counts stay the training ones.
    confidence = histogram(probabilities.max(axis=1), CONFIDENCE_EDGES)
    spec = replace(spec, output=replace(spec.output, baseline=replace(spec.output.baseline, confidence=confidence)))

    paths = write_version(spec, model_bytes, args.out_dir)
    print(summary(spec, f"test accuracy {accuracy:.3f} on {len(test)} held-out rows", paths, args.out_dir))


if __name__ == "__main__":
    main()
