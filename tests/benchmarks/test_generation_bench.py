"""The generation benchmark's bookkeeping: the tokens it counts and the float32 bound it reports."""

from __future__ import annotations

from tests.benchmarks import load_script
from trace_realign.evaluate.generate import GenerationSettings


class Echo:
    """A backend whose `_continue` answers every prompt with the same ids."""

    def __init__(self, answer: list[int]) -> None:
        self.answer = answer

    def _continue(self, batch, settings, stop, seed):
        return [list(self.answer) for _ in batch]


def test_counted_takes_prompt_tokens_and_answers_up_to_the_stop_token():
    bench = load_script("generation")
    backend = Echo([5, 6, 2, 9, 9])  # 2 stops it: three answer tokens, the stop included
    counted = bench.Counted(backend)
    backend._continue([[1, 2, 3], [4]], GenerationSettings(max_new_tokens=8), [2], 0)
    backend._continue([[7, 7]], GenerationSettings(max_new_tokens=8), [2], 0)
    assert (counted.prompt_tokens, counted.tokens) == (6, 9)


def test_an_answer_cut_by_max_new_tokens_counts_what_was_generated():
    bench = load_script("generation")
    backend = Echo([5, 6, 7, 8])
    counted = bench.Counted(backend)
    backend._continue([[1]], GenerationSettings(max_new_tokens=3), [2], 0)
    assert counted.tokens == 3


def test_the_float32_bound_is_answer_tokens_over_the_matmul_time_of_every_token_put_through():
    bench = load_script("generation")
    # 4 prompts, 100 prompt tokens and 60 answer tokens: 100 + 60 - 4 tokens go through the model
    reference = {"prompt_tokens": 100, "tokens": 60}
    ceiling = {"flops_per_token": 2e9, "float32": {"peak_gflops": 40.0}}
    seconds = 156 * 2e9 / 40e9
    assert bench.float32_bound(reference, 4, ceiling) == round(60 / seconds, 1)
