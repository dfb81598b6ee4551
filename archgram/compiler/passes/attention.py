"""Find dot-product attention written with primitives (catalog row S55, FuseMax).

einspace-style grammars have no attention op: they reach it as

    branch clone(2)                         # outer split
      arm 0: ...prefix                      #   (anything)
             branch clone(2)                #   scores: S = A @ B
               arm 0: A  (e.g. linear)      #     A = Q        (.., i, d)
               arm 1: B  (e.g. linear permute(0,2,1))  #  B = K^T (.., d, j)
             matmul(scaled=?)
             scale(value=c)*                #   (optional, any number)
             softmax                        #   over the last axis: j
      arm 1: V  (e.g. linear)               #   V  (.., j, e)
    matmul(scaled=?)                        # O = P @ V

The arms that compute Q, K^T and V may be anything; what makes this attention
is the cascade matmul -> (scale) -> softmax over the last axis -> matmul with
the right operand order. Because einspace's softmax always normalises the last
axis and ``P @ V`` contracts exactly that axis, the match is exact: a softmax
after a permute (the wrong axis), a missing softmax or an op between the score
matmul and the softmax other than a constant scale is not attention and is not
matched. A second form computes the transposed output ``O^T = V^T @ P^T``
(softmax, then a permute swapping the last two axes, as the right operand).

A match says where the parts sit (node paths in the derivation JSON's
notation: ``root/0/arm1/0``) and describes the function as a FuseMax-style
cascade of Einsums, in the three-pass form or the one-pass form a fused kernel
runs (running max RM, running denominator RD, running numerator RNV).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from archgram.grammar.derivation import BranchNode, Derivation, Node, OpNode, RuleNode, op_label, walk_paths
from archgram.grammar.inference import bound_args, resolve_op
from archgram.shapes import Shape, fmt

Item = tuple[str, Node]  # (path, op or branch node) of a rule-free sequence


def flatten(node: Node, path: str) -> list[Item]:
    """The rule-free item sequence of ``node``: ops and branches with their paths."""
    if isinstance(node, RuleNode):
        return [item for i, c in enumerate(node.children) for item in flatten(c, f"{path}/{i}")]
    return [(path, node)]


def branches(node: Node, path: str = "root") -> Iterator[tuple[str, BranchNode]]:
    """Every branch node with its path, children before parents (post-order)."""
    return ((p, n) for p, n in walk_paths(node, path, post=True) if isinstance(n, BranchNode))


def _is(node: Node, op: str) -> bool:
    return isinstance(node, OpNode) and node.op == op


def _live(items: list[Item]) -> list[Item]:
    """The items that compute something (identities dropped)."""
    return [(p, n) for p, n in items if not _is(n, "identity")]


def _is_swap_last(node: Node, rank: int) -> bool:
    """A permute that swaps the last two axes (a transpose of the matrices)."""
    return (_is(node, "permute")
            and tuple(node.args.get("order", ())) == tuple(range(rank - 2)) + (rank - 1, rank - 2))


def _matmul_scale(node: BranchNode) -> float | None:
    """The constant a matmul merge multiplies by, or None if the merge is no matmul."""
    closer = resolve_op(node.close)
    if closer.op != "matmul" or len(node.arms) != 2:
        return None
    return 1.0 / math.sqrt(node.arms[0].out_shape[-1]) if bound_args(closer)["scaled"] else 1.0


def _label(node: Node) -> str:
    if isinstance(node, OpNode):
        return op_label(node)
    return f"branch {op_label(resolve_op(node.open))} .. {op_label(resolve_op(node.close))}"


def _chain(items: list[Item]) -> str:
    shown = [_label(n) for _, n in _live(items)]
    return " -> ".join(shown) if shown else "identity"


@dataclass(frozen=True)
class AttentionMatch:
    """One attention found in a derivation: where its parts are and what it computes."""

    path: str  # the outer branch (split -> P arm, V arm -> matmul), replaced by the fused module
    scores_path: str  # the inner branch computing S = Q @ K^T
    softmax_path: str
    prefix_paths: tuple[str, ...]  # items of the P arm before the scores branch
    scale_paths: tuple[str, ...]  # constant scale ops between the score matmul and the softmax
    p_arm: int  # which outer arm carries the softmax (0; 1 in the transposed form)
    transposed: bool  # O^T = V^T @ P^T
    scale: float  # softmax(scale * Q K^T)
    out_scale: float  # the outer matmul's constant
    q_shape: Shape
    k_shape: Shape  # K (.., j, d): the transpose of the score matmul's right operand
    v_shape: Shape  # V (.., j, e), whichever layout the arm produced
    out_shape: Shape
    q_from: str = ""
    k_from: str = ""
    v_from: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        """Every node path the fused module takes over."""
        return (self.path, self.scores_path, *self.scale_paths, self.softmax_path)

    def sizes(self) -> dict[str, int]:
        batch = self.q_shape[:-2]
        out = {("b" if k == 0 else f"c{k}" if len(batch) > 2 else "c"): n for k, n in enumerate(batch)}
        out.update(i=self.q_shape[-2], j=self.k_shape[-2], d=self.q_shape[-1], e=self.v_shape[-1])
        return out

    def cascade(self, one_pass: bool = False) -> list[str]:
        """The attention as a cascade of Einsums (FuseMax's notation, keys j split
        into tiles j1 of j0 keys in the one-pass form a fused kernel runs)."""
        b = "".join(f"{k}," for k in self.sizes() if k not in "ijde")
        c = f"{self.scale:.6g} * " if self.scale != 1.0 else ""
        tail = f" * {self.out_scale:.6g}" if self.out_scale != 1.0 else ""
        out = f"O[{b}e,i]" if self.transposed else f"O[{b}i,e]"
        if not one_pass:
            return [
                f"S[{b}i,j] = {c}Q[{b}i,d] K[{b}j,d]",
                f"M[{b}i] = max_j S[{b}i,j]",
                f"P[{b}i,j] = exp(S[{b}i,j] - M[{b}i])",
                f"L[{b}i] = sum_j P[{b}i,j]",
                f"{out} = P[{b}i,j] V[{b}j,e] / L[{b}i]{tail}",
            ]
        return [
            f"S[{b}i,j1,j0] = {c}Q[{b}i,d] K[{b}j1,j0,d]",
            f"LM[{b}i,j1] = max_j0 S[{b}i,j1,j0]",
            f"RM[{b}i,j1+1] = max(RM[{b}i,j1], LM[{b}i,j1])",
            f"SLN[{b}i,j1,j0] = exp(S[{b}i,j1,j0] - RM[{b}i,j1+1])",
            f"PRM[{b}i,j1] = exp(RM[{b}i,j1] - RM[{b}i,j1+1])",
            f"RD[{b}i,j1+1] = PRM[{b}i,j1] RD[{b}i,j1] + sum_j0 SLN[{b}i,j1,j0]",
            f"RNV[{b}i,e,j1+1] = PRM[{b}i,j1] RNV[{b}i,e,j1] + sum_j0 SLN[{b}i,j1,j0] V[{b}j1,j0,e]",
            f"{out} = RNV[{b}i,e,J1] / RD[{b}i,J1]{tail}",
        ]

    def describe(self, one_pass: bool = False) -> str:
        sizes = " ".join(f"{k}={v}" for k, v in self.sizes().items())
        lines = [
            f"attention at {self.path}{' (transposed output)' if self.transposed else ''}: {sizes}",
            f"  Q {fmt(self.q_shape)} = {self.q_from}",
            f"  K^T = {self.k_from}",
            f"  V {fmt(self.v_shape)} = {self.v_from}",
            f"  scale {self.scale:.6g}{f', output x {self.out_scale:.6g}' if self.out_scale != 1.0 else ''}"
            f" -> O {fmt(self.out_shape)}",
        ]
        return "\n".join(lines + [f"    {line}" for line in self.cascade(one_pass)])


def _p_arm(items: list[Item], transposed: bool):
    """Split an arm's items as prefix, scores branch, scales, softmax; None if the arm
    does not end in softmax(scale * (A @ B)) (then a permute of the last two axes
    when ``transposed``)."""
    live = _live(items)
    if transposed:
        if not live or not _is_swap_last(live[-1][1], len(live[-1][1].in_shape)):
            return None
        live = live[:-1]
    if not live or not _is(live[-1][1], "softmax"):
        return None
    softmax, k = live[-1], len(live) - 2
    scales = []
    while k >= 0 and _is(live[k][1], "scale"):
        scales.append(live[k])
        k -= 1
    if k < 0 or not isinstance(live[k][1], BranchNode) or _matmul_scale(live[k][1]) is None:
        return None
    paths = [p for p, _ in items]
    prefix_paths = tuple(paths[: paths.index(live[k][0])])
    return prefix_paths, live[k], tuple(reversed(scales)), softmax


def match_branch(path: str, node: BranchNode) -> AttentionMatch | None:
    """The attention this branch computes, or None if it is no attention cascade."""
    out_scale = _matmul_scale(node)
    if out_scale is None:
        return None
    for transposed in (False, True):
        p_arm = 1 if transposed else 0
        found = _p_arm(flatten(node.arms[p_arm], f"{path}/arm{p_arm}"), transposed)
        if found is None:
            continue
        prefix_paths, (scores_path, scores), scale_items, (softmax_path, _) = found
        scale = _matmul_scale(scores) * math.prod(float(bound_args(n)["value"]) for _, n in scale_items)
        a, b = scores.arms
        v_arm = node.arms[1 - p_arm]
        v_shape = v_arm.out_shape[:-2] + v_arm.out_shape[:-3:-1] if transposed else v_arm.out_shape
        k_shape = b.out_shape[:-2] + b.out_shape[:-3:-1]
        return AttentionMatch(
            path=path, scores_path=scores_path, softmax_path=softmax_path, prefix_paths=prefix_paths,
            scale_paths=tuple(p for p, _ in scale_items), p_arm=p_arm, transposed=transposed,
            scale=scale, out_scale=out_scale, q_shape=a.out_shape, k_shape=k_shape, v_shape=v_shape,
            out_shape=node.out_shape,
            q_from=_chain(flatten(a, "")), k_from=_chain(flatten(b, "")),
            v_from=_chain(flatten(v_arm, "")) + (" (then transposed)" if transposed else ""),
        )
    return None


def find_attention(derivation: Derivation) -> list[AttentionMatch]:
    """Every attention cascade in ``derivation``, innermost first (the order the
    lowering must follow, since an outer match holds the inner one's modules)."""
    if derivation.root.out_shape is None:
        derivation.infer_shapes()
    found = (match_branch(path, node) for path, node in branches(derivation.root))
    return [m for m in found if m is not None]


@dataclass(frozen=True)
class HeadsMatch:
    """n attentions side by side whose outputs are concatenated along the last axis
    (einspace's multi-head form: ``clone(n) head*n concat``, or ``group`` to give
    each head a slice): one fused call over an extra head axis h."""

    path: str
    split: str
    heads: tuple[AttentionMatch, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) + tuple(p for m in self.heads for p in m.paths)

    def cascade(self, one_pass: bool = False) -> list[str]:
        lines = self.heads[0].cascade(one_pass)
        b = "".join(f"{k}," for k in self.heads[0].sizes() if k not in "ijde")
        lines = [line.replace(f"[{b}", f"[{b}h,") for line in lines]
        return lines + [f"Out[{b}i,(h,e)] = O[{b}h,i,e]"]

    def describe(self, one_pass: bool = False) -> str:
        first = self.heads[0]
        sizes = " ".join(f"{k}={v}" for k, v in first.sizes().items())
        lines = [f"multi-head attention at {self.path}: {self.split}, h={len(self.heads)} {sizes}",
                 f"  per head: Q = {first.q_from}; K^T = {first.k_from}; V = {first.v_from}; scale {first.scale:.6g}",
                 *(f"  head {k}: {m.path}" for k, m in enumerate(self.heads))]
        return "\n".join(lines + [f"    {line}" for line in self.cascade(one_pass)])


def match_heads(path: str, node: BranchNode, found: dict[str, AttentionMatch]) -> HeadsMatch | None:
    """Heads to batch into one call: every arm is exactly one matched attention
    (identities aside), all of one shape and scale, concatenated on the last axis."""
    closer = resolve_op(node.close)
    if closer.op != "concat" or bound_args(closer)["dim"] != len(node.out_shape) - 1:
        return None
    heads = []
    for k, arm in enumerate(node.arms):
        live = _live(flatten(arm, f"{path}/arm{k}"))
        if len(live) != 1 or live[0][0] not in found or found[live[0][0]].transposed:
            return None
        heads.append(found[live[0][0]])
    first = heads[0]
    same = ("q_shape", "k_shape", "v_shape", "scale", "out_scale")
    if any(getattr(m, f) != getattr(first, f) for m in heads for f in same):
        return None
    return HeadsMatch(path, op_label(resolve_op(node.open)), tuple(heads))


def find_fusions(derivation: Derivation) -> list[AttentionMatch | HeadsMatch]:
    """Attention cascades, then the groups of them that form multi-head attention
    (innermost first: the order in which the lowering rewrites them)."""
    if derivation.root.out_shape is None:
        derivation.infer_shapes()
    matches: list = []
    found: dict[str, AttentionMatch] = {}
    for path, node in branches(derivation.root):
        match = match_branch(path, node) or match_heads(path, node, found)
        if match is not None:
            matches.append(match)
        if isinstance(match, AttentionMatch):
            found[path] = match
    return matches


def one_pass_reference(q, k, v, scale: float, tile: int):
    """The one-pass cascade of ``AttentionMatch.cascade(one_pass=True)``, run
    literally over key tiles of ``tile`` keys (torch tensors (.., i, d), (.., j, d),
    (.., j, e)): the executable form of the description, checked in the tests
    against the unfused network."""
    import torch

    rm = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)  # RM[.., i, 0]
    rd = torch.zeros(q.shape[:-1], dtype=q.dtype)  # RD[.., i, 0]
    rnv = torch.zeros(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)  # RNV[.., i, e, 0]
    for j1 in range(0, k.shape[-2], tile):
        s = scale * torch.einsum("...id,...jd->...ij", q, k[..., j1 : j1 + tile, :])
        rm_next = torch.maximum(rm, s.amax(-1))  # RM[j1+1] = max(RM[j1], LM[j1])
        sln = torch.exp(s - rm_next[..., None])
        prm = torch.exp(rm - rm_next)
        rd = prm * rd + sln.sum(-1)
        rnv = prm[..., None] * rnv + torch.einsum("...ij,...je->...ie", sln, v[..., j1 : j1 + tile, :])
        rm = rm_next
    return rnv / rd[..., None]


def describe(matches: list[AttentionMatch | HeadsMatch], one_pass: bool = False) -> str:
    """All matches as text (``archgram fusions``)."""
    if not matches:
        return "no attention cascade found"
    grouped = {m.path for h in matches if isinstance(h, HeadsMatch) for m in h.heads}
    return "\n\n".join(m.describe(one_pass) for m in matches if m.path not in grouped)
