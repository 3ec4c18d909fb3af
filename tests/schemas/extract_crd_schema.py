"""Write a CRD's published ``openAPIV3Schema`` as a small JSON schema file.

    python tests/schemas/extract_crd_schema.py CRD.yaml VERSION OUT.json [--keep PATH ...] [--drop PATH ...]

The schema is the CRD's own (the file the project publishes), with what validation does not
need removed: ``description`` texts; and, with ``--keep``, every property of ``spec`` that is
not named (``spec.predictor`` keeps the predictor; the rest of ``spec`` is then refused,
which the manifests here never use); with ``--drop``, the named properties are removed (so
refused): e.g. the InferenceService predictor's per-framework forms (``sklearn``, ``onnx``,
...), which the manifests here do not use (they use ``model``). ``additionalProperties: false`` is added to every
object that lists its properties and does not preserve unknown fields, so a misspelt field
fails as ``kubectl apply --validate=strict`` would fail it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strip(v) for k, v in node.items() if k != "description"}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def main(argv: list[str]) -> None:
    crd_path, version, out_path, *rest = argv
    keep: list[str] = []
    drop: list[str] = []
    into: list[str] | None = None
    for arg in rest:
        if arg in ("--keep", "--drop"):
            into = keep if arg == "--keep" else drop
        elif into is not None:
            into.append(arg)
    crd = yaml.safe_load(Path(crd_path).read_text())
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = entry["schema"]["openAPIV3Schema"]
    for dotted in keep:
        _, name = dotted.split(".", 1)
        spec = schema["properties"]["spec"]
        spec.setdefault("_kept", {})[name] = spec["properties"][name]
    if keep:
        spec = schema["properties"]["spec"]
        spec["properties"] = spec.pop("_kept")
        spec["required"] = [r for r in spec.get("required", []) if r in spec["properties"]]
    for dotted in drop:
        *parents, name = dotted.split(".")
        node = schema
        for parent in parents:
            node = node["properties"][parent]
        del node["properties"][name]
    schema = _strip(schema)
    schema["x-source"] = f"{crd['metadata']['name']} {version}"
    Path(out_path).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
