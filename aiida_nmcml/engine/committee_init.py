"""Diversity of a fine-tuned committee: per-member training data and per-member initial readout weights.

Why (science review B4, §3.5): members fine-tuned from one foundation model with the same data differ only by the
order the minibatches are seen in. In the demo their model files were byte-identical and the force deviation was
~4e-6 eV/Å against a 0.05 eV/Å selection threshold: an uncertainty that measures nothing. Two sources of
diversity, in order of value:

1. **different data per member** (bagging): a bootstrap sample (with replacement) or a distinct random subset of
   the training frames; the frames a member did not draw ("out of bag") are its own validation set for early
   stopping, and one common held-out set, never seen by any member, is kept for calibration;
2. **a different starting point**: the readout of the foundation model re-drawn (``reinit``) or perturbed
   (``perturb``) with the member's seed, written as a new model file that the member fine-tunes from. mace-torch
   copies every weight of the foundation model into the model it trains (``load_foundations_elements``), readouts
   included, so this is how the initial condition reaches it; there is no mace option for it (0.3.16).

Pure functions on ase/torch objects; no AiiDA (the work chain wraps them in calcfunctions for provenance).
"""

from __future__ import annotations

import numpy as np

RESAMPLING = ('bootstrap', 'subsample', 'none')
READOUT_INIT = ('reinit', 'perturb', 'none')


def member_indices(n: int, seed: int, method: str = 'bootstrap', fraction: float = 0.8) -> tuple[list, list]:
    """``(train, out_of_bag)`` frame indices of one member.

    ``bootstrap``: n draws with replacement (duplicates kept: they weigh the frame); ``subsample``: a random
    ``fraction`` without replacement; ``none``: every frame, no out-of-bag set.
    """
    if method not in RESAMPLING:
        raise ValueError(f'resampling must be one of {RESAMPLING}, not {method!r}')
    if n < 1:
        raise ValueError('no frames to resample')
    rng = np.random.default_rng(int(seed))
    if method == 'none':
        return list(range(n)), []
    if method == 'bootstrap':
        train = sorted(int(i) for i in rng.integers(0, n, size=n))
    else:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f'subsample fraction must be in (0, 1), not {fraction}')
        size = min(n, max(1, round(fraction * n)))
        train = sorted(int(i) for i in rng.choice(n, size=size, replace=False))
    out_of_bag = sorted(set(range(n)) - set(train))
    return train, out_of_bag


def readout_parameters(model, which: str = 'last'):
    """The readout parameters of a MACE model: of the last readout block (``last``) or of all of them (``all``)."""
    readouts = list(model.readouts)
    blocks = readouts[-1:] if which == 'last' else readouts
    return [p for block in blocks for p in block.parameters()]


def initialise_readout(model, seed: int, mode: str = 'perturb', scale: float = 0.5, which: str = 'last'):
    """Change the readout weights of ``model`` in place with the member's ``seed``; returns the model.

    ``reinit``: fresh draws from N(0, 1), e3nn's own initialisation of ``o3.Linear`` weights (the path normalisation
    is applied in the forward pass, so unit-normal weights are its default state). ``perturb``: ``w + scale · std(w)
    · N(0, 1)`` per tensor: keeps the foundation's energy scale near the start, so short fine-tunings stay accurate.
    """
    import torch

    if mode not in READOUT_INIT:
        raise ValueError(f'readout init must be one of {READOUT_INIT}, not {mode!r}')
    if mode == 'none':
        return model
    generator = torch.Generator(device='cpu').manual_seed(int(seed))
    with torch.no_grad():
        for parameter in readout_parameters(model, which):
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            if mode == 'reinit':
                parameter.copy_(noise.to(parameter.device))
            else:
                spread = parameter.detach().std() if parameter.numel() > 1 else parameter.detach().abs()
                parameter.add_((scale * spread * noise).to(parameter.device))
    return model
