"""Bodies that would cost far more memory decoded than they weigh are refused before decoding.

Against a real server at its default limits (16 MiB bodies, 4,096 rows): each body below is
just under the byte limit, and was measured (``bench/memory_amplification.py``) to raise the
server's peak RSS by 216 to 808 MiB while msgspec built its values, before the rows cap
could refuse it. Now its JSON values (or its binary BYTES tensor's declared rows) are
counted first and it is refused (413) without being decoded: the peak rises by the body
itself, joined once from its chunks, and the count's small temporaries (32 to 40 MiB
measured). The bound asserted, 100 MiB, leaves room for a noisy machine and stays far below
what any of these bodies cost before. A valid body whose strings hold more commas than the
value limit is still answered: the count skips strings before it refuses anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.helpers.procfs import reset_peak, status_kib
from tests.integration.conftest import ServerProcess
from tests.integration.support import PENGUIN, assert_problem

LIMIT = 16 * 1024 * 1024
"""The server's default byte limit; every body here is just under it."""
BOUND_MIB = 100
P1, P2, D2 = "/v1/models/penguins:predict", "/v2/models/penguins/infer", "/v2/models/diabetes/infer"


def _repeated(prefix: bytes, item: bytes, suffix: bytes) -> bytes:
    """``prefix``, as many comma-joined ``item``s as fit under the limit, ``suffix``."""
    n = (LIMIT - len(prefix) - len(suffix)) // (len(item) + 1)
    return prefix + b",".join([item] * n) + suffix


def _empty_rows() -> tuple[str, bytes, dict[str, str]]:  # measured before: +408 MiB
    return P1, _repeated(b'{"instances":[', b"{}", b"]}"), {}


def _nested_lists() -> tuple[str, bytes, dict[str, str]]:  # +808 MiB
    return P1, _repeated(b'{"instances":[{"island":[', b"[" * 500 + b"]" * 500, b"]}]}"), {}


def _v2_numbers() -> tuple[str, bytes, dict[str, str]]:  # +472 MiB
    n = (LIMIT - 200) // 2
    head = b'{"inputs":[{"name":"age","datatype":"FP64","shape":[%d],"data":[' % n
    return D2, head + b",".join([b"1"] * n) + b"]}]}", {}


def _v2_binary_bytes() -> tuple[str, bytes, dict[str, str]]:  # +216 MiB
    element = b"\x02\x00\x00\x00ab"  # Triton's BYTES layout: a 4-byte length, then the bytes
    n = (LIMIT - 200) // len(element)
    tensor = {"name": "island", "datatype": "BYTES", "shape": [n], "parameters": {"binary_data_size": n * len(element)}}
    header = json.dumps({"inputs": [tensor]}).encode()
    return P2, header + element * n, {"Inference-Header-Content-Length": str(len(header))}


def _peak_growth_mib(server: ServerProcess, send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    """``send()``'s answer, and how far the server's peak RSS rose above its RSS before it."""
    assert server.process is not None
    pid = server.process.pid
    before = reset_peak(pid)
    assert before is not None, "the kernel refused to reset the peak RSS (/proc/PID/clear_refs)"
    response = send()
    return response, (status_kib(pid, "VmHWM") - before) / 1024


@pytest.mark.parametrize(
    "make",
    [_empty_rows, _nested_lists, _v2_numbers, _v2_binary_bytes],
    ids=["v1-empty-rows", "v1-nested-lists", "v2-json-numbers", "v2-binary-bytes"],
)
def test_a_body_that_amplifies_is_refused_before_it_is_decoded(
    server: ServerProcess, make: Callable[[], tuple[str, bytes, dict[str, str]]]
) -> None:
    path, body, headers = make()
    assert len(body) <= LIMIT
    with server.client() as client:
        response, growth = _peak_growth_mib(server, lambda: client.post(path, content=body, headers=headers))
        assert_problem(response, 413)
        assert response.json()["code"] == "payload-too-large"
        assert growth < BOUND_MIB, f"peak RSS rose {growth:.0f} MiB for a {len(body) / 2**20:.0f} MiB body"
        assert client.get("/v2/health/live").status_code == 200


def test_strings_full_of_commas_do_not_count_as_values(server: ServerProcess) -> None:
    """More commas than the V1 value limit (about 307,000 for penguins), all inside the
    target column's string, which the spec ignores: a valid one-row request, answered."""
    row = {**PENGUIN, "species": ",[{" * 150_000}
    with server.client() as client:
        response = client.post(P1, json={"instances": [row]})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["predictions"][0]["label"] == "Gentoo"
