"""Evaluation under `accelerate launch`: the processes share the generation, the main one judges.

Generation is the GPU work: each of the `world` processes answers every `world`-th prompt and the
answers are gathered back into prompt order on every process. Judging (API calls, a verdict
cache), utility scoring and writing the files then run once, on the main process, and its
metrics are handed to the others, so every process returns the same dict. With one process
both helpers are plain calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

# Imported inside functions: accelerate and the model code are imported inside the functions that use them, so importing
# the evaluation (as `evaluate --help` does) stays light.

T = TypeVar("T")


def world() -> tuple[int, int]:
    """`(rank, number of processes)`; (0, 1) outside a launched world."""
    from trace_realign.model.loading import process_state

    state = process_state()
    return state.process_index, state.num_processes


def split_generate(generate: Callable[[list[Any]], list[T]], prompts: Sequence[Any]) -> list[T]:
    """`generate(prompts)` with the prompts dealt out across the processes, answers in prompt order."""
    rank, n = world()
    if n == 1:
        return generate(list(prompts))
    from accelerate.utils import gather_object

    mine = generate(list(prompts)[rank::n])
    out: list[Any] = [None] * len(prompts)
    for r, answers in gather_object([(rank, mine)]):
        out[r::n] = answers
    return out


def from_main(value: T | None) -> T:
    """The main process' `value` on every process (the others pass None)."""
    rank, n = world()
    if n == 1:
        return value  # type: ignore[return-value]
    from accelerate.utils import broadcast_object_list

    box = [value if rank == 0 else None]
    broadcast_object_list(box, from_process=0)
    return box[0]
