"""A learned summary of attention patterns (catalog S69: Li et al. 2023 summarise
the attention each image patch gives with an autoencoder, then browse the
latent codes to find groups of patches that attend alike).

Each row of an attention map -- one query patch's weights over the keys, for
one head -- is a pattern. ``summarize`` fits a small autoencoder to all rows of
a layer and returns each row's low-dimensional code; patterns that look alike
land close together, which the report plots.
"""
from __future__ import annotations

import torch
from torch import nn


def summarize(rows: torch.Tensor, latent: int = 2, steps: int = 300, hidden: int = 32,
              seed: int = 0) -> tuple[torch.Tensor, float]:
    """(codes (M, latent), final reconstruction MSE) of an autoencoder fitted to
    ``rows`` (M, N) of attention weights. Deterministic for a seed."""
    gen = torch.Generator().manual_seed(seed)
    x = rows.detach().float().cpu()
    x = x / x.abs().amax().clamp_min(1e-12)  # one scale for every row: the shapes matter, not the units
    n = x.shape[1]
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        encoder = nn.Sequential(nn.Linear(n, hidden), nn.Tanh(), nn.Linear(hidden, latent))
        decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, n))
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (decoder(encoder(x)) - x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        codes = encoder(x)
        mse = float((decoder(codes) - x).square().mean())
    return codes, mse
