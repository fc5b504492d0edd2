"""Near-ties in half precision: when two logits are too close for a dtype to order them the same way on every path.

A greedy argmax is decided by the gap between the two largest logits. Two computations of the same logits (a cached
one-token forward and a full-prefix forward, a (k+1)-token verify and a one-token step, another GPU kernel) round
differently, so where that gap is within a few rounding steps either token is the model's greedy choice. The
tolerance is counted in steps of the dtype at the logits' own magnitude, not in absolute logits: GPT-2's logits run
from about 1 to over 100 in size, where one bfloat16 step ranges from 2**-7 to 0.5.

float32 (and any dtype not named here) has no tolerance: there, greedy output and draft counters must be exact.
Torch-free: the bench applies the rule to the audit, the analysis to the divergence margins.
"""

from __future__ import annotations

import math

# Significand bits (the implicit leading one included) of the half-precision dtypes.
SIGNIFICAND_BITS = {"float16": 11, "bfloat16": 8}

# Steps of the dtype, at the larger of the two logits' magnitudes, within which a gap counts as a near-tie. Measured
# on the embedded family on a CPU (tools and figures: docs, "Half precision"): the gap between the top two draft
# logits moved by at most 1.5 steps in bfloat16 and 2 in float16 between the engine's cached forwards and the
# audit's full-prefix forward. 4 leaves room for other kernels (GPU GEMMs split their reductions differently).
NEAR_TIE_STEPS = 4.0


def dtype_step(magnitude: float, dtype: str) -> float:
    """The spacing of ``dtype``'s representable numbers at ``|magnitude|`` (one unit in the last place); 0.0 for a
    dtype without a near-tie tolerance (float32)."""
    bits = SIGNIFICAND_BITS.get(dtype)
    if bits is None:
        return 0.0
    size = abs(magnitude)
    if size == 0.0 or not math.isfinite(size):
        return 0.0
    return 2.0 ** (math.floor(math.log2(size)) - (bits - 1))


def tolerance_steps(dtype: str) -> float:
    """The near-tie tolerance of ``dtype`` in steps: :data:`NEAR_TIE_STEPS` in half precision, 0 in float32."""
    return NEAR_TIE_STEPS if dtype in SIGNIFICAND_BITS else 0.0


def margin_steps(margin: float, magnitude: float, dtype: str) -> float | None:
    """``|margin|`` in steps of ``dtype`` at ``magnitude``; None for a dtype without a tolerance (float32)."""
    step = dtype_step(magnitude, dtype)
    if step == 0.0:
        return None
    return abs(margin) / step


def is_near_tie(margin: float, magnitude: float, dtype: str) -> bool:
    """Whether a logit gap of ``margin`` (either sign) between logits of size up to ``magnitude`` is within the
    dtype's tolerance. Never in float32."""
    steps = margin_steps(margin, magnitude, dtype)
    return steps is not None and steps <= tolerance_steps(dtype)
