"""Operator documents are decoded under a budget on the expanded document (``gateway.documents``):
alias and merge-key expansion, self-containing aliases and depth are refused before any value
is built; bytes over the limit are ``PayloadTooLargeError`` (413) everywhere, the command line
included; harmless anchors still work."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from gateway.cli import EXIT_USAGE, main
from gateway.documents import DocumentBudget, decode_document, read_document
from gateway.errors import PayloadTooLargeError, SpecError
from gateway.spec import MAX_SPEC_BYTES, FeatureSpec, decode_spec, load_spec
from tests.hostile_documents import alias_spec, alias_spec_of_size, merge_key_spec, padded_spec

PENGUINS_MODEL = Path(__file__).resolve().parents[2] / "models" / "penguins" / "1" / "model.onnx"

SMALL = DocumentBudget("a test document", 10_000, max_nodes=100, max_depth=5)


@pytest.mark.parametrize(
    "data",
    [alias_spec(), alias_spec_of_size(MAX_SPEC_BYTES), merge_key_spec()],
    ids=["50k-aliases", "aliases-at-4MiB", "merge-keys"],
)
def test_alias_expansion_is_refused_before_any_struct_is_built(data: bytes) -> None:
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than 2,097,152 nodes"):
        decode_spec(data)
    # 0.04 s, 0.6 s and 0.02 s measured; the unguarded decode took 10-17 s for the first
    assert time.perf_counter() - t0 < 5.0


def test_expansion_is_counted_through_nested_aliases() -> None:
    # each level repeats the one below three times: d holds 3 x 3 x 3 x 3 = 81 scalars; the
    # document expands to 183 nodes (a 4, b 13, c 40, d 121, the root and its 4 keys 5)
    doc = "a: &a [1, 2, 3]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c]\n"
    value = decode_document(doc, dict, DocumentBudget("a test document", 10_000, max_nodes=183), invalid=SpecError)
    assert sum(len(a) for c in value["d"] for b in c for a in b) == 81
    with pytest.raises(SpecError, match="expands to more than 182 nodes"):
        decode_document(doc, dict, DocumentBudget("a test document", 10_000, max_nodes=182), invalid=SpecError)
    with pytest.raises(SpecError, match="expands to more than 100 nodes"):
        decode_document(doc, dict, SMALL, invalid=SpecError)


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(SpecError, match="refers to a node that contains it"):
        decode_document("a: &a [1, *a]\n", dict, SMALL, invalid=SpecError)


def test_depth_is_bounded_on_the_expanded_document() -> None:
    assert decode_document("[[[[1]]]]", list, SMALL, invalid=SpecError) == [[[[1]]]]
    with pytest.raises(SpecError, match="nests deeper than 5 levels"):
        decode_document("[[[[[1]]]]]", list, SMALL, invalid=SpecError)
    # each alias is shallow, the expansion is not
    with pytest.raises(SpecError, match="nests deeper than 5 levels"):
        decode_document("a: &a [[1]]\nb: &b [[*a]]\n", dict, SMALL, invalid=SpecError)


def test_a_harmless_anchor_decodes_as_its_expansion() -> None:
    shared = (
        "name: s\nfeatures:\n"
        "- {type: number, name: x, transform: &std {kind: standardize, mean: 1.0, std: 2.0}}\n"
        "- {type: number, name: y, transform: *std}\n"
    )
    spelled = shared.replace("&std ", "").replace("*std", "{kind: standardize, mean: 1.0, std: 2.0}")
    assert decode_spec(shared) == decode_spec(spelled)
    assert decode_spec(shared).digest == decode_spec(spelled).digest


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_bytes_over_the_limit_are_413_and_at_the_limit_are_decoded(fmt: str) -> None:
    at_limit = padded_spec(MAX_SPEC_BYTES) if fmt == "yaml" else _json_of_size(MAX_SPEC_BYTES)
    assert len(at_limit) == MAX_SPEC_BYTES
    assert decode_spec(at_limit, fmt).feature_names == ("x",)  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLargeError, match="4,194,305 bytes; a spec may have at most 4,194,304") as caught:
        decode_spec(at_limit + b" ", fmt)  # type: ignore[arg-type]
    assert caught.value.status_hint == 413


def test_a_text_spec_is_measured_in_bytes() -> None:
    text = padded_spec(MAX_SPEC_BYTES).decode()[:-2] + "é\n"  # é: one character, two bytes
    assert len(text) == MAX_SPEC_BYTES
    with pytest.raises(PayloadTooLargeError, match="4,194,305 bytes"):
        decode_spec(text)


def test_an_oversized_spec_file_is_refused_unread_and_the_cli_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(padded_spec(MAX_SPEC_BYTES + 1))
    with pytest.raises(PayloadTooLargeError, match="big.yaml: 4,194,305 bytes"):
        load_spec(big)
    with pytest.raises(PayloadTooLargeError):
        read_document(big, DocumentBudget("a spec", MAX_SPEC_BYTES))
    data = tmp_path / "rows.csv"
    data.write_text("x\n1\n")
    assert main(["check", "--spec", str(big), str(data)]) == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("driftgate: error: ") and "at most 4,194,304" in err[0], err


def test_an_alias_spec_file_is_refused_by_the_cli_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "aliases.yaml"
    spec.write_bytes(alias_spec())
    with pytest.raises(SpecError, match="expands to more than"):
        FeatureSpec.load(spec)
    data = tmp_path / "rows.csv"
    data.write_text("a\n1\n")
    assert main(["check", "--spec", str(spec), str(data)]) == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "expands to more than" in err[0], err


def test_yaml_errors_are_one_line_naming_the_source() -> None:
    with pytest.raises(SpecError, match=r"^my spec: .*\S$") as caught:
        decode_spec("name: [unclosed\n", source="my spec")
    assert "\n" not in str(caught.value)


def _json_of_size(size: int) -> bytes:
    body = msgspec.json.encode({"name": "padded", "features": [{"type": "number", "name": "x"}], "description": ""})
    return body[:-2] + b"d" * (size - len(body)) + b'"}'


@pytest.mark.parametrize(
    ("spec", "says"), [(alias_spec(), "expands to more than"), (padded_spec(MAX_SPEC_BYTES + 1), "at most")]
)
def test_driftgate_register_refuses_a_hostile_spec_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: bytes, says: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(spec)
    repository = tmp_path / "models"
    args = ["register", "hostile", "--model", str(PENGUINS_MODEL), "--spec", str(path), "--repository", str(repository)]
    assert main(args) == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and says in err[0], err
    assert not (repository / "hostile").exists()
