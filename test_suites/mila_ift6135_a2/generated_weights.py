"""Parameter values both sides can rebuild: the test process writes them into a submission's
MultiHeadedAttention, the grading parent rebuilds them from the parameters' shapes alone.

Integer hashing (splitmix64) only, so the values are the same on every machine and with every
numpy version; numpy only (the grading parent never imports torch).
"""
import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def generated_values(shape, index, seed, scale):
    """float32 values uniform in [-scale, scale), a function of (seed, index, position) only."""
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        z = np.arange(count, dtype=np.uint64)
        z = z + np.uint64((int(seed) * 1_000_003 + int(index) * 7_919 + 1) << 20)
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        z = z ^ (z >> np.uint64(31))
    unit = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # [0, 1)
    return (scale * (2.0 * unit - 1.0)).astype(np.float32).reshape(shape)
