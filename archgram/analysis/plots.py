"""PNG figures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def attention_maps(path: Path, maps: torch.Tensor, title: str) -> None:
    """One panel per head of an (H, Nq, Nk) map: query rows, key columns."""
    plt = _plt()
    h = maps.shape[0]
    cols = min(h, 4)
    rows = math.ceil(h / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < h:
            im = ax.imshow(maps[i].numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
            ax.set_title(f"head {i}", fontsize=9)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def importance(path: Path, layers: list[str], values: list[list[float]], label: str) -> None:
    """Layers x heads heat map of ablation deltas."""
    plt = _plt()
    width = max(len(v) for v in values)
    grid = torch.full((len(layers), width), float("nan"))
    for i, v in enumerate(values):
        grid[i, : len(v)] = torch.tensor(v)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * width, 1 + 0.5 * len(layers)))
    im = ax.imshow(grid.numpy(), cmap="magma", aspect="auto")
    ax.set_yticks(range(len(layers)), [f"L{i}" for i in range(len(layers))])
    ax.set_xlabel("head")
    ax.set_title(label, fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def distances(path: Path, layers: list[str], values: list[list[float]], unit: str) -> None:
    """Mean attention distance of every head against layer depth (ViT's Fig. 7)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, v in enumerate(values):
        ax.scatter([i] * len(v), v, s=18)
    ax.set_xticks(range(len(layers)), [f"L{i}" for i in range(len(layers))])
    ax.set_xlabel("attention layer")
    ax.set_ylabel(f"mean attention distance ({unit})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def pattern_codes(path: Path, codes: list[list[float]], heads: int, title: str) -> None:
    """Autoencoder codes of one layer's per-patch attention patterns, coloured by head."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    per_head = len(codes) // max(heads, 1)
    for h in range(heads):
        part = codes[h * per_head:(h + 1) * per_head]
        ax.scatter([c[0] for c in part], [c[1] for c in part], s=8, label=f"h{h}")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
