"""Hostile YAML documents, shared by the unit tests of ``gateway.documents`` and the
reliability tests that send them to a real server (catalogue E15)."""

from __future__ import annotations

__all__ = ["alias_spec", "alias_spec_of_size", "merge_key_spec", "padded_spec"]

_ALIAS = b"- *f\n"


def _anchored_feature(edges: int) -> bytes:
    cuts = ",".join(str(i) for i in range(edges))
    counts = ",".join("1" for _ in range(edges + 1))
    return f"name: hostile\nfeatures:\n- &f {{type: number, name: a, baseline: {{edges: [{cuts}], counts: [{counts}]}}}}\n".encode()


def alias_spec(aliases: int = 50_000, edges: int = 1_000) -> bytes:
    """One feature with an ``edges``-edge baseline, anchored, then repeated by ``aliases``
    aliases: the issue's spec (about 250 KB) by default. Expanded, it holds
    ``aliases x (2 x edges + 10)`` nodes."""
    return _anchored_feature(edges) + _ALIAS * aliases


def alias_spec_of_size(size: int, edges: int = 1_000) -> bytes:
    """``alias_spec`` with as many aliases as fit in ``size`` bytes, padded to exactly ``size``."""
    head = _anchored_feature(edges)
    aliases, rest = divmod(size - len(head) - 1, len(_ALIAS))
    return head + _ALIAS * aliases + b"#" * rest + b"\n"


def merge_key_spec(aliases: int = 20_000, keys: int = 1_000) -> bytes:
    """A mapping of ``keys`` keys merged ``aliases`` times into one feature (``<<``): PyYAML's
    own constructor copies every merged pair, 5 s for the 90 KB default, before any type is
    checked."""
    mapping = ", ".join(f"k{i}: {i}" for i in range(keys))
    merges = ", ".join(["*m"] * aliases)
    return f"name: hostile\nm: &m {{{mapping}}}\nfeatures:\n- <<: [{merges}]\n".encode()


def padded_spec(size: int) -> bytes:
    """A valid one-feature spec padded with a comment to exactly ``size`` bytes."""
    head = b"name: padded\nfeatures:\n- {type: number, name: x}\n#"
    return head + b"p" * (size - len(head) - 1) + b"\n"
