"""Documents an operator supplies (feature specs; later rollout state, review answers):
decoded under a budget on the document as the decoder will walk it, not only on its bytes.

A byte limit alone does not bound a YAML document: an alias (``*name``) repeats an anchored
node (``&name``) at the cost of a few bytes, and whatever walks the loaded object walks every
repetition. A 210 KB spec of 50,000 aliases of one feature with a 1,000-edge baseline
loads in 30 ms (PyYAML shares the aliased objects) and then cost ``msgspec.convert`` 10-17 s
and 750 MiB, one Struct per repetition; a merge key (``<<: [*m, *m, ...]``) of 20,000 aliases
of a 1,000-key mapping costs PyYAML itself 5 s in 90 KB. So a YAML document is decoded in
three steps:

1. **bytes**: over ``max_bytes`` is ``PayloadTooLargeError`` (413), before anything is parsed;
2. **compose**: libyaml builds the node graph (an alias is a second reference to the same
   node, so this costs what the bytes cost), and a walk of that graph measures the
   *expanded* document, counting each node as often as the aliases repeat it, and its depth;
   over ``max_nodes`` or ``max_depth`` (or an alias that contains itself) is refused before
   any Python value is constructed;
3. **construct and convert**: PyYAML's safe constructor, then ``msgspec.convert`` to the
   document's type (as ``msgspec.yaml.decode`` does).

Measured (2 shared cores): the 250 KB alias spec above is refused in 40 ms and the same at
4 MiB in 0.5 s, resident memory +9 MiB at most; the walk costs an alias-free 0.6 MB spec
(200,000 nodes) 10 ms of its 3 s load. Two other ways were weighed: refusing every alias
costs the same walk and also refuses a hand-written spec that shares one transform by an
anchor, which is harmless; decoding in the resource-limited child that trial-loads models
bounds memory but not time (an alias-free 4 MiB spec takes about 10 s to load there as here,
so a limit of 1 s would refuse it), and the command line (``FeatureSpec.load``) has no child.

The default node budget is half the byte budget: an alias-free document cannot hold more
nodes than that (every node takes a byte and its separator at the least), so the budget
never refuses a document for its size alone, and aliases can never buy more work than bytes
could. JSON has no aliases and msgspec bounds its depth, so a JSON document is only held to
its bytes.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import yaml

from gateway.errors import GatewayError, PayloadTooLargeError
from gateway.files import read_input

__all__ = ["DocumentBudget", "decode_document", "read_document"]

T = TypeVar("T")

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class DocumentBudget:
    """What a document may cost to decode. ``what`` names it in messages ("a spec")."""

    what: str
    max_bytes: int
    max_nodes: int = 0
    """Nodes of the expanded document (aliases counted as often as they repeat a node);
    0 means ``max_bytes // 2`` (see the module docstring)."""
    max_depth: int = 64
    """Nesting of the expanded document (a scalar at the top is depth 1)."""

    @property
    def nodes(self) -> int:
        return self.max_nodes or self.max_bytes // 2


def read_document(path: str | Path, budget: DocumentBudget, what: str = "file") -> bytes:
    """The bytes of ``path`` (``UsageError`` if missing or unreadable, as ``read_input``);
    ``PayloadTooLargeError`` if the file is over the budget's bytes, told from its size
    before it is read."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError:
        size = 0  # read_input names what is wrong
    if size > budget.max_bytes:
        raise _too_large(str(p), size, budget)
    return read_input(p, what, allow_empty=True)


def decode_document(
    data: bytes | str,
    type: type[T],
    budget: DocumentBudget,
    *,
    fmt: Literal["yaml", "json"] = "yaml",
    source: str = "document",
    invalid: type[GatewayError],
) -> T:
    """Decode ``data`` as ``type`` within ``budget`` (see the module docstring).

    Raises ``PayloadTooLargeError`` over the bytes, else ``invalid`` (one line naming
    ``source``) for anything that does not decode, is over the node or depth budget, or
    does not convert to ``type``.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode())
    if size > budget.max_bytes:
        raise _too_large(source, size, budget)
    try:
        if fmt == "json":
            return msgspec.json.decode(data, type=type)
        tree = _load_yaml(data, budget, source, invalid)
        return msgspec.convert(tree, type, builtin_types=(datetime.datetime, datetime.date))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise invalid(f"{source}: {_one_line(exc)}") from exc


def _too_large(source: str, size: int, budget: DocumentBudget) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{source}: {size:,} bytes; {budget.what} may have at most {budget.max_bytes:,}")


def _one_line(exc: BaseException) -> str:
    """The message on one line: YAML errors carry multi-line position marks."""
    return " ".join(str(exc).split())


def _load_yaml(data: bytes | str, budget: DocumentBudget, source: str, invalid: type[GatewayError]) -> Any:
    """The document's Python value, built only once its node graph is within the budget."""
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, budget, source, invalid)
        return loader.construct_document(node)
    except (yaml.YAMLError, ValueError, LookupError, AttributeError, RecursionError) as exc:
        raise invalid(f"{source}: {_one_line(exc)}") from None
    finally:
        loader.dispose()


def _measure(root: yaml.Node, budget: DocumentBudget, source: str, invalid: type[GatewayError]) -> None:
    """Refuse ``root`` if its expansion has more nodes or levels than ``budget`` allows, or
    an alias contains itself. Each distinct collection is visited once and its expanded
    size and height remembered (scalars are only counted, a repeated child is counted once
    with its repetitions), so this costs the composed graph, not its expansion."""
    measured: dict[yaml.Node, tuple[int, int]] = {}  # a collection (by identity): (size, height)
    open_: set[yaml.Node] = set()  # the collections on the path from the root to the one visited
    # (node, None, 0) is a node to visit; (node, its collection children with how often
    # each occurs, its scalar count) is one whose children have all been measured
    stack: list[tuple[yaml.Node, Counter[yaml.Node] | None, int]] = [(root, None, 0)]
    while stack:
        node, collections, scalars = stack.pop()
        if collections is not None:
            open_.discard(node)
            size, height = 1 + scalars, 2 if scalars else 1
            for child, times in collections.items():
                child_size, child_height = measured[child]
                size += times * child_size
                height = max(height, child_height + 1)
                if size > budget.nodes:
                    raise invalid(
                        f"{source}: the document expands to more than {budget.nodes:,} nodes through its aliases; "
                        f"{budget.what} may have at most that many"
                    )
            if height > budget.max_depth:
                raise invalid(f"{source}: the document nests deeper than {budget.max_depth} levels")
            measured[node] = (size, height)
            continue
        if node in measured or type(node) is yaml.ScalarNode:
            continue
        if node in open_:
            raise invalid(f"{source}: an alias refers to a node that contains it")
        open_.add(node)
        children = node.value if type(node) is yaml.SequenceNode else list(chain.from_iterable(node.value))
        nested = [c for c in children if type(c) is not yaml.ScalarNode]
        kids: Counter[yaml.Node] = Counter(nested)
        stack.append((node, kids, len(children) - len(nested)))
        stack.extend((c, None, 0) for c in kids if c not in measured)
