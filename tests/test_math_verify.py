"""Answer extraction and equivalence: tricky equivalences and adversarial answers, through the real
worker pool (math-verify in killable processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from palaestra.plugins.math.checker import VerifyOptions, check, rewrite_percent
from palaestra.plugins.math.extract import extract_answer, last_boxed
from palaestra.plugins.math.pool import VerifierPool
from palaestra.types import ComponentStatus

HANG = "9^{9^{9}}"  # sympy works on this for minutes


@pytest.fixture(scope="module")
def pool() -> Iterator[VerifierPool]:
    with VerifierPool(workers=2, deadline_s=5.0) as verifier_pool:
        yield verifier_pool


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{3} and then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{a^{2}}{\\sqrt{b}}}", "\\frac{a^{2}}{\\sqrt{b}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("answer \\fbox{7}", "7"),
        ("unbalanced \\boxed{3", None),
        ("closed \\boxed{2} then unclosed \\boxed{3", None),
        ("nested \\boxed{\\boxed{2}}", "2"),
        ("no box here", None),
    ],
)
def test_last_boxed_handles_nesting(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_extraction_strategies_in_order() -> None:
    strategies = ("boxed", "answer_is", "hashes", "last_number")
    assert extract_answer("work\nThe answer is $42$.", strategies).answer == "42"  # type: ignore[union-attr]
    assert extract_answer("48/2 = 24\n#### 1,024", ("hashes",)).answer == "1,024"  # type: ignore[union-attr]
    found = extract_answer("She has 3 apples.\nThen 12 more, 15 in total.", strategies)
    assert found is not None and (found.answer, found.strategy) == ("15", "last_number")
    boxed = extract_answer("The answer is 4. Actually \\boxed{5}", strategies)
    assert boxed is not None and (boxed.answer, boxed.strategy) == ("5", "boxed")
    assert extract_answer("nothing numeric", strategies) is None


@pytest.mark.parametrize(
    ("text", "letter"),
    [("The answer is (B).", "B"), ("\\boxed{C}", "C"), ("Answer: d", "D"), ("I pick option A", "A")],
)
def test_multiple_choice_letters(text: str, letter: str) -> None:
    found = extract_answer(text, ("choice",))
    assert found is not None and found.answer == letter


# ---------------------------------------------------------------- equivalence (in-process, trusted input)


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("0.5", "\\frac12", True),
        ("1/2", "0.51", False),
        ("\\frac{1}{3}", "0.333", False),  # not within math-verify's float rounding
        ("\\{1, 2\\}", "\\{2, 1\\}", True),  # set order does not matter
        ("-3, 2", "2, -3", True),
        ("(1, 2]", "(1, 2]", True),
        ("(1, 2]", "[1, 2]", False),
        ("5", "5 \\text{ cm}", True),  # units are dropped
        ("\\begin{pmatrix} 11 \\\\ 4 \\end{pmatrix}", "\\begin{pmatrix}11\\\\4\\end{pmatrix}", True),
        ("5\\sqrt{2}", "\\sqrt{50}", True),
        ("1000", "1,000", True),
    ],
)
def test_tricky_equivalences(gold: str, pred: str, expected: bool) -> None:
    assert check(gold, pred, VerifyOptions()) is expected


@pytest.mark.parametrize(
    ("mode", "gold", "pred", "expected"),
    [
        ("value", "50\\%", "0.5", True),
        ("value", "50\\%", "50", False),
        ("number", "50\\%", "50", True),
        ("number", "50\\%", "0.5", False),
        ("either", "50%", "0.5", True),
        ("either", "50%", "50", True),
        ("either", "50", "0.5", False),  # no percent sign anywhere: no second reading
        ("value", "0.25", "25 percent", True),
    ],
)
def test_percent_handling_per_dataset(mode: str, gold: str, pred: str, expected: bool) -> None:
    assert check(gold, pred, VerifyOptions(percent=mode)) is expected  # type: ignore[arg-type]


def test_percent_rewrite() -> None:
    assert rewrite_percent("50\\% and 12.5%", "value") == "\\frac{50}{100} and \\frac{12.5}{100}"
    assert rewrite_percent("50\\%", "number") == "50"


def test_gold_inequality_is_not_matched_by_any_interval() -> None:
    """math-verify's asymmetry (gold first) is kept: a reward hacking guard."""
    assert check("x > 1", "(1, \\infty)", VerifyOptions())
    assert not check("x > 1", "(0, \\infty)", VerifyOptions())
    assert not check("(1, \\infty)", "x > 1", VerifyOptions())


# ---------------------------------------------------------------- through the pool


async def test_pool_agrees_with_in_process_check(pool: VerifierPool) -> None:
    pairs = [("1/2", "0.5"), ("\\{1,2\\}", "\\{2,1\\}"), ("3", "4"), ("x^2+2x", "x(x+2)")]
    verdicts = await asyncio.gather(*(pool.verify(g, p) for g, p in pairs))
    assert all(v.status is ComponentStatus.OK for v in verdicts)
    assert [v.correct for v in verdicts] == [check(g, p, VerifyOptions()) for g, p in pairs]
    assert pool.verify_sync("0.5", "1/2").correct


async def test_answer_spam_in_one_box_is_wrong(pool: VerifierPool) -> None:
    spam = ", ".join(str(i) for i in range(1, 101))
    verdict = await pool.verify("56", spam)
    assert verdict.status is ComponentStatus.OK and not verdict.correct


async def test_very_long_expression_is_answered_not_hung(pool: VerifierPool) -> None:
    long_sum = " + ".join(["1"] * 3000)
    verdict = await pool.verify("3000", long_sum, deadline_s=5.0)
    assert verdict.status in (ComponentStatus.OK, ComponentStatus.TIMEOUT)
    assert not (verdict.status is ComponentStatus.TIMEOUT and verdict.correct)


async def test_unparseable_gold_is_an_error_not_a_wrong_answer(pool: VerifierPool) -> None:
    verdict = await pool.verify("", "3")
    assert verdict.status is ComponentStatus.ERROR
    assert "gold" in verdict.detail


@pytest.fixture(scope="module")
def kill_only_pool() -> Iterator[VerifierPool]:
    """No in-worker alarm: like a computation stuck in C code, only the hard deadline's kill stops a hang."""
    with VerifierPool(workers=2, deadline_s=3.0, soft_deadline_fraction=None) as verifier_pool:
        yield verifier_pool


async def test_hang_is_killed_reported_as_timeout_and_does_not_block_others(
    kill_only_pool: VerifierPool,
) -> None:
    pool = kill_only_pool
    killed_before = pool.stats.workers_killed
    hang = asyncio.ensure_future(pool.verify("1", HANG))
    await asyncio.sleep(0.2)  # let a worker take the hanging job
    started = time.perf_counter()
    others = await asyncio.gather(*(pool.verify("\\frac{1}{2}", "0.5") for _ in range(20)))
    others_done = time.perf_counter() - started
    assert all(v.status is ComponentStatus.OK and v.correct for v in others)
    assert not hang.done(), (
        f"the 20 other verifications ({others_done:.2f}s) finished while the hang was running"
    )
    verdict = await hang
    assert verdict.status is ComponentStatus.TIMEOUT and not verdict.correct
    assert pool.stats.workers_killed == killed_before + 1
    # The replacement worker serves the next job.
    again = await asyncio.gather(*(pool.verify("2", "4/2") for _ in range(4)))
    assert all(v.status is ComponentStatus.OK and v.correct for v in again)


async def test_soft_deadline_times_out_without_killing_the_worker(pool: VerifierPool) -> None:
    killed_before = pool.stats.workers_killed
    verdict = await pool.verify("1", HANG, deadline_s=1.0)
    assert verdict.status is ComponentStatus.TIMEOUT and "soft" in verdict.detail
    assert pool.stats.workers_killed == killed_before


async def test_a_crashed_worker_gives_error_and_is_replaced() -> None:
    with VerifierPool(workers=1, deadline_s=30.0, soft_deadline_fraction=None) as single:
        assert (await single.verify("1", "1")).correct
        [pid] = single.worker_pids()
        assert pid is not None
        pending = asyncio.ensure_future(single.verify("1", HANG))
        await asyncio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        verdict = await pending
        assert verdict.status is ComponentStatus.ERROR and "died" in verdict.detail
        after = await single.verify("3", "3")
        assert after.status is ComponentStatus.OK and after.correct
        assert single.worker_pids() != [pid]


def test_shutdown_stops_workers() -> None:
    single = VerifierPool(workers=1)
    [pid] = single.worker_pids()
    single.shutdown()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    with pytest.raises(RuntimeError):
        single.submit("1", "1")
