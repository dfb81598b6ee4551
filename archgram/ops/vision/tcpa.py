"""Token coordinated prompt attention (Liu, Zou, Hua & Zhou, ICML 2025, "Token
Coordinated Prompt Attention is Needed for Visual Prompting"; catalog S20).

Deep visual prompting (VPT) appends the same learned prompts to every block's
tokens, so all tokens attend to the same prompts. TCPA gives tokens their own:

  role level   the CLS token attends to [CLS, CLS prompts P_c, image tokens];
               image tokens attend to [CLS, image prompts, image tokens];
               prompt outputs are discarded (the block keeps N tokens).
  token level  image prompts form a pool P_i (M prompts with keys K_m); each
               image token h_j is matched to its top-k prompts by cosine
               similarity cos(h_j, K_m) and attends only to those.

All of it is one softmax attention over keys [tokens ; P_c ; P_i] with a
per-query mask. Input is a sequence (B, N, C) whose token 0 is the CLS token.

Deviations: the prompts pass through this block's own q/k/v projections
(as prompt tokens of a block do); prompt keys K_m are separate learned vectors
matched against the block input (the paper's matching function compares token
and prompt features); top-k selection is not differentiable, so the matching
similarity is added to the chosen prompts' logits as a straight-through term
(value 0, gradient 1) and the keys learn from the task loss.

Catalog S20, read against the paper. Paper: visual prompting where prompts are
coordinated with tokens: role level (CLS prompts for the CLS token, image
prompts for image tokens) and token level (each image token attends to its own
matched subset of the image prompts), in place of VPT's one prompt set seen by
every token. archgram: both levels as one masked attention over [tokens;
prompts]. Differs: the paper prompts a frozen pre-trained ViT; in a searched
network nothing is pre-trained, so the block's projections train with the
prompts; prompt matching uses learned keys with a straight-through score.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.ops.vision._common import divides
from archgram.shapes import Shape

ARGS = {
    "heads": Arg(int, 2, low=1, doc="attention heads"),
    "cls_prompts": Arg(int, 4, low=1, doc="prompts seen only by the CLS token"),
    "image_prompts": Arg(int, 8, low=1, doc="pool of prompts for the image tokens"),
    "topk": Arg(int, 2, low=1, doc="image prompts each image token is assigned"),
}


@register_op("tcpa", family="vision", refs=("S20",), args=ARGS)
class TokenCoordinatedPromptAttention(Op):
    """TCPA: CLS and image tokens attend to disjoint prompt sets; each image token to its top-k matched prompts."""

    def __init__(self, shape: Shape, heads: int = 2, cls_prompts: int = 4, image_prompts: int = 8, topk: int = 2):
        super().__init__()
        self.output_shape(shape, heads=heads, image_prompts=image_prompts, topk=topk)
        c = shape[2]
        self.heads, self.topk = heads, topk
        self.cls_prompts = nn.Parameter(torch.randn(cls_prompts, c) * 0.02)
        self.image_prompts = nn.Parameter(torch.randn(image_prompts, c) * 0.02)
        self.prompt_keys = nn.Parameter(torch.randn(image_prompts, c))
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    @classmethod
    def output_shape(cls, shape: Shape, heads: int = 2, image_prompts: int = 8, topk: int = 2, **args) -> Shape:
        check_rank("tcpa", shape, 3)
        if shape[1] < 2:
            raise ShapeError(f"tcpa needs a CLS token and at least one image token, got {shape}")
        divides("tcpa", shape, shape[2], heads, "heads")
        if topk > image_prompts:
            raise ShapeError(f"tcpa: topk {topk} exceeds the pool of {image_prompts} image prompts (input {shape})")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, heads: int = 2, cls_prompts: int = 4, image_prompts: int = 8,
                     topk: int = 2) -> int:
        c = shape[2]
        return (cls_prompts + 2 * image_prompts) * c + (3 * c * c + 3 * c) + (c * c + c)

    def assignment(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, M) boolean: which pool prompts each token may see (row 0, the CLS token: none)."""
        sim = F.normalize(t, dim=-1) @ F.normalize(self.prompt_keys, dim=-1).T  # (B, N, M)
        chosen = torch.zeros_like(sim, dtype=torch.bool)
        chosen.scatter_(-1, sim.topk(self.topk, dim=-1).indices, True)
        chosen[:, 0] = False
        return chosen

    def key_mask(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, N + Lc + M) boolean mask over keys [tokens ; CLS prompts ; image prompts]."""
        b, n, _ = t.shape
        lc = self.cls_prompts.shape[0]
        tokens = torch.ones(b, n, n, dtype=torch.bool, device=t.device)
        cls = torch.zeros(b, n, lc, dtype=torch.bool, device=t.device)
        cls[:, 0] = True
        return torch.cat([tokens, cls, self.assignment(t)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        prompts = torch.cat([self.cls_prompts, self.image_prompts]).expand(b, -1, -1)
        q, k, v = self.qkv(torch.cat([x, prompts], dim=1)).chunk(3, dim=-1)
        q = q[:, :n]  # prompt outputs are discarded, so prompts never query

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, -1, self.heads, d).transpose(1, 2)

        logits = split(q) @ split(k).transpose(-1, -2) * d**-0.5  # (B, h, N, N + Lc + M)
        # straight-through: adds 0 to the pool prompts' logits, but lets the task loss reach the prompt keys
        sim = F.normalize(x, dim=-1) @ F.normalize(self.prompt_keys, dim=-1).T  # (B, N, M)
        logits[..., n + self.cls_prompts.shape[0]:] += (sim - sim.detach()).unsqueeze(1)
        logits = logits.masked_fill(~self.key_mask(x).unsqueeze(1), float("-inf"))
        out = torch.softmax(logits, dim=-1) @ split(v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))
