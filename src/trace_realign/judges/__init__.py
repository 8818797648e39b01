"""Judges: the oracle pi_new that reads a (prompt, response) under a policy.

`make_judge(spec)` builds one from a spec (`openai:MODEL[@URL]`, `hf:PATH`, `rules:FILE`,
`labels:COL_CHOSEN,COL_REJECTED`, `noisy:RATE:SPEC`) or a YAML block; `base.Judge` is the
interface every judge follows. Each kind lives in its own module and is imported on demand, so
a rules run never loads torch or httpx.
"""

from trace_realign.judges.base import Judge, JudgeItem
from trace_realign.judges.spec import make_judge

__all__ = ["Judge", "JudgeItem", "make_judge"]
