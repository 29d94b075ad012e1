"""Shared test settings.

Training tests are tiny, so PyTorch's intra-op thread pool only adds overhead, and on a
busy machine (other experiments running) its spinning threads make steps 5-10x slower.
One thread keeps the suite fast and its timings predictable.
"""

import torch

torch.set_num_threads(1)
