"""Dynamic batching (gateway.batching): policies, and the queue on a real model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.batching import OFFLOAD_SECONDS, Batcher, BatchPolicy, parse_batching, runs_long
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


def test_a_queue_holding_every_request_in_progress_runs_without_waiting(penguins) -> None:  # type: ignore[no-untyped-def]
    """Requests that arrive together join first (the same turn of the event loop); then a
    queue holding every request in progress runs at once, not after ``max_wait``."""
    in_progress = [3]
    batcher = Batcher(penguins.runtime, BatchPolicy(max_rows=64, max_wait=10.0), lambda: in_progress[0])

    async def main() -> None:
        together = [asyncio.ensure_future(batcher.run(m)) for m in _matrices(penguins, 3)]
        answers = await asyncio.wait_for(asyncio.gather(*together), timeout=5)
        assert [a.probabilities.shape for a in answers] == [(1, 3)] * 3
        assert batcher.calls == 1, "the three joined before the queue ran"
        in_progress[0] = 1
        await asyncio.wait_for(batcher.run(_matrices(penguins, 1)[0]), timeout=5)  # alone: no wait

    asyncio.run(main())
    assert batcher.calls == 2


def test_a_queue_waits_while_other_requests_are_in_progress(penguins) -> None:  # type: ignore[no-untyped-def]
    """Another request in progress may still join: the queue waits for it, up to ``max_wait``."""
    batcher = Batcher(penguins.runtime, BatchPolicy(max_rows=64, max_wait=0.05), lambda: 2)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = asyncio.ensure_future(batcher.run(_matrices(penguins, 1)[0]))
        await asyncio.sleep(0.01)
        assert not first.done(), "ran before the wait, with another request in progress"
        await asyncio.gather(first, batcher.run(_matrices(penguins, 1)[0]))  # the second arrives
        return loop.time() - start

    waited = asyncio.run(main())
    assert batcher.calls == 1
    assert waited < 0.05, "the two requests in progress were all there: no wait for the rest of max_wait"


def test_a_call_is_offloaded_by_its_fixed_cost_plus_its_rows() -> None:
    runtime = SimpleNamespace(
        variable_cost=False, seconds_per_call=0.75 * OFFLOAD_SECONDS, seconds_per_row=0.05 * OFFLOAD_SECONDS
    )
    assert not runs_long(runtime, 4)  # type: ignore[arg-type]  # 0.95 of the limit
    assert runs_long(runtime, 6)  # type: ignore[arg-type]  # 1.05
    runtime.variable_cost = True
    assert runs_long(runtime, 1)  # type: ignore[arg-type]


def test_the_digits_ensemble_is_fitted_as_mostly_fixed_cost() -> None:
    """The warm-up fit: one call of many small operators costs nearly the same for 1 row
    as for 32, so a 32-row batch is not sent to a thread as 32 one-row costs would be
    (0.64 ms, not 11 ms, on the machine of bench/README.md)."""
    folder = MODELS / "digits" / "1"
    digits = load_model("digits", 1, (folder / "model.onnx").read_bytes(), (folder / "spec.yaml").read_bytes(), 1, None)
    runtime = digits.runtime
    assert runtime.seconds_per_call > 5 * runtime.seconds_per_row > 0

    def expected(rows: int) -> float:
        return runtime.seconds_per_call + rows * runtime.seconds_per_row

    assert expected(32) < 3 * expected(1), "32 rows fitted as nearly 32 one-row calls"
