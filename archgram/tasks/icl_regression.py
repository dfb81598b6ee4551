"""In-context linear regression (Garg et al. 2022, "What can transformers learn in-context?").

Every sequence has its own weight vector w ~ N(0, I/d). Its first ``n_context``
tokens are labelled examples [x_i, y_i, 1] with y_i = w.x_i + noise; the last
``n_query`` tokens are [x_q, 0, 0]. The model predicts y at each query token
(one scalar per token; only query positions are scored). Query tokens never hold
their own label, so a bidirectional body cannot copy the answer, unlike the
interleaved (x, y) format of causal models.

Metric: negative mean squared error (higher is better). ``reference()`` computes
on the validation set what predicting zero, per-sequence least squares, the
Bayes-optimal ridge estimator and the debiased one-step gradient descent that
trained multi-head softmax attention implements (step size fitted) score.
``archgram.analysis.icl_heads`` measures the head patterns behind ``debiased_gd``.

Catalog S18, read against the paper (He et al. 2025, "In-Context Linear
Regression Demystified"). Paper: one-layer multi-head softmax attention trained
on in-context linear regression develops diagonal-homogeneous KQ and
last-entry-only, zero-sum OV patterns, implements debiased gradient descent,
beats single-head attention and nears the Bayes-optimal ridge predictor.
archgram: the task generator, the least-squares, ridge and debiased-GD
references, and the head-pattern analysis for a trained attention layout.
Differs: the query token carries a context flag and a zero label instead of the
paper's [x; 0] column (so a bidirectional body cannot copy the answer), and
several query tokens share one sequence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.shapes import Shape
from archgram.tasks.base import GeneratedTask, Recipe, register_task
from archgram.tasks.heads import TokenHead


def debiased_gd(X: torch.Tensor, y: torch.Tensor, Xq: torch.Tensor) -> torch.Tensor:
    """(1/n) sum_l (x_l . x_q - mean_l x_l . x_q) y_l for contexts X (B, n, d), labels
    y (B, n) and queries Xq (B, m, d): one gradient step from zero with the bias removed."""
    s = Xq @ X.transpose(1, 2)  # (B, m, n)
    return ((s - s.mean(-1, keepdim=True)) * y[:, None, :]).mean(-1)


@register_task
class ICLRegression(GeneratedTask):
    name = "icl-regression"
    # The small causal transformer (references/icl-regression.pcfg) reaches neg-MSE -0.161 on validation (seed 0;
    # predicting zero scores about -1).
    recipe = Recipe(optimizer="adamw", lr=1e-3, batch_size=32, budget="1000steps")
    refs = ("S18",)
    metric_name = "neg_mse"
    description = "in-context linear regression, w ~ N(0, I/d) per sequence; -MSE at query tokens"

    def __init__(self, dim: int = 8, n_context: int = 16, n_query: int = 8, noise: float = 0.1,
                 n_train: int = 8000, n_val: int = 1000, n_test: int | None = None):
        super().__init__(n_train, n_val, n_test)
        self.dim, self.n_context, self.n_query, self.noise = dim, n_context, n_query, noise

    def config(self) -> dict:
        return {"dim": self.dim, "n_context": self.n_context, "n_query": self.n_query, "noise": self.noise,
                **self.sizes()}

    @property
    def length(self) -> int:
        return self.n_context + self.n_query

    def draw(self, n: int, gen: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d, c = self.dim, self.n_context
        w = torch.randn(n, d, generator=gen) / d**0.5
        x = torch.randn(n, self.length, d, generator=gen)
        y = torch.einsum("btd,bd->bt", x, w) + self.noise * torch.randn(n, self.length, generator=gen)
        tokens = torch.zeros(n, self.length, d + 2)
        tokens[..., :d] = x
        tokens[:, :c, d] = y[:, :c]
        tokens[:, :c, d + 1] = 1.0
        return tokens, y[:, c:].contiguous()

    def body_input_shape(self, batch_size: int) -> Shape:
        return (batch_size, self.length, self.dim + 2)

    def output_target(self, batch_size: int) -> tuple:
        return (batch_size, self.length, None)

    def head(self, body_output_shape: Shape) -> nn.Module:
        return TokenHead(body_output_shape, 1, tokens=self.length, squeeze=True)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred[:, self.n_context:], y)

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return -float(F.mse_loss(pred[:, self.n_context:].double(), y.double()))

    # ------------------------------------------------------------ baselines
    def baseline_predictions(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Query predictions (B, n_query) of the classical estimators fitted per sequence."""
        d, c = self.dim, self.n_context
        X = tokens[:, :c, :d].double()
        y = tokens[:, :c, d].double().unsqueeze(-1)
        Xq = tokens[:, c:, :d].double()
        w_ls = torch.linalg.pinv(X) @ y  # least squares (minimum norm if n_context < dim)
        # Posterior mean under the generating prior w ~ N(0, I/d), noise variance sigma^2.
        lam = max(self.noise, 1e-6) ** 2 * d
        eye = torch.eye(d, dtype=X.dtype)
        w_ridge = torch.linalg.solve(X.transpose(1, 2) @ X + lam * eye, X.transpose(1, 2) @ y)
        gd = debiased_gd(X, y.squeeze(-1), Xq)
        return {
            "zero": torch.zeros(Xq.shape[:2], dtype=X.dtype),
            "least_squares": (Xq @ w_ls).squeeze(-1),
            "bayes_ridge": (Xq @ w_ridge).squeeze(-1),
            "debiased_gd": gd,  # scaled by the best step size in reference()
        }

    def reference(self, seed: int = 0) -> dict[str, float]:
        """neg-MSE of predicting zero, least squares and Bayes ridge on the val split."""
        data = self.data(seed)
        y = data.y_val.double()
        out = dict(self.published)
        for name, pred in self.baseline_predictions(data.x_val).items():
            if name == "debiased_gd":  # the step size a trained layer would learn: least-squares fit
                pred = pred * (pred * y).sum() / (pred * pred).sum()
            out[name] = -float(((pred - y) ** 2).mean())
        return out
