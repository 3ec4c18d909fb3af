"""Dynamic batching (gateway.batching): policies, and the queue on a real model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.batching import BatchPolicy, Batcher, parse_batching
from gateway.errors import ConfigError
from gateway.registry import load_model

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def penguins():  # type: ignore[no-untyped-def]
    folder = MODELS / "penguins" / "1"
    return load_model("penguins", 1, (folder / "model.onnx").read_bytes(), (folder / "spec.yaml").read_bytes(), 1, None)


def test_policies_parse_with_milliseconds_and_a_wildcard() -> None:
    assert parse_batching("digits=32:2, *=8:0.5") == {"digits": BatchPolicy(32, 0.002), "*": BatchPolicy(8, 0.0005)}
    assert parse_batching("") == {}


@pytest.mark.parametrize("text", ["digits", "digits=32", "digits=x:2", "digits=1:2", "digits=32:5000", "a/b=2:1"])
def test_bad_policies_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="batching entry"):
        parse_batching(text)


def _matrices(model, n: int) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    return [rng.normal(size=(1, model.runtime.input_width)).astype(np.float32) for _ in range(n)]


def test_concurrent_requests_share_one_call_and_each_gets_its_own_rows(penguins) -> None:  # type: ignore[no-untyped-def]
    batcher = Batcher(penguins.runtime, BatchPolicy(max_rows=8, max_wait=0.05))
    matrices = _matrices(penguins, 8)

    async def main() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(batcher.run(m) for m in matrices))

    answers = asyncio.run(main())
    assert batcher.calls == 1
    for m, answer in zip(matrices, answers, strict=True):
        alone = penguins.runtime.run(m).probabilities
        assert answer.probabilities.shape == (1, 3)
        np.testing.assert_allclose(answer.probabilities, alone, rtol=1e-6)


def test_a_partial_queue_runs_when_the_wait_is_up(penguins) -> None:  # type: ignore[no-untyped-def]
    batcher = Batcher(penguins.runtime, BatchPolicy(max_rows=64, max_wait=0.01))

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(batcher.run(m) for m in _matrices(penguins, 3)))
        return loop.time() - start

    waited = asyncio.run(main())
    assert batcher.calls == 1
    assert 0.009 <= waited < 1.0


def test_a_full_queue_runs_at_once_and_a_big_request_runs_alone(penguins) -> None:  # type: ignore[no-untyped-def]
    batcher = Batcher(penguins.runtime, BatchPolicy(max_rows=4, max_wait=10.0))

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(batcher.run(m) for m in _matrices(penguins, 4))), timeout=5)
        big = np.concatenate(_matrices(penguins, 6))
        answer = await asyncio.wait_for(batcher.run(big), timeout=5)
        assert answer.probabilities.shape == (6, 3)

    asyncio.run(main())
    assert batcher.calls == 2


def test_a_caller_that_gives_up_does_not_break_the_others(penguins) -> None:  # type: ignore[no-untyped-def]
    batcher = Batcher(penguins.runtime, BatchPolicy(max_rows=64, max_wait=0.02))
    matrices = _matrices(penguins, 3)

    async def main() -> list:  # type: ignore[type-arg]
        doomed = asyncio.ensure_future(batcher.run(matrices[0]))
        others = [asyncio.ensure_future(batcher.run(m)) for m in matrices[1:]]
        await asyncio.sleep(0)
        doomed.cancel()
        return await asyncio.gather(*others)

    answers = asyncio.run(main())
    assert [a.probabilities.shape for a in answers] == [(1, 3), (1, 3)]
