"""Data-flow graph of a derivation (networkx), for analysis and drawing.

Nodes are op applications (plus 'input' and 'output'); an edge carries a tensor
from one op to the next, labelled with its shape. Rule wrappers vanish: the
graph is the network, not the derivation path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

from archgram.grammar.inference import resolve_op
from archgram.grammar.tree import BranchNode, Node, OpNode, RuleNode, op_label
from archgram.shapes import fmt

if TYPE_CHECKING:
    from archgram.grammar.derivation import Derivation


def to_networkx(derivation: Derivation) -> nx.DiGraph:
    if derivation.root.out_shape is None:
        derivation.infer_shapes()
    graph = nx.DiGraph(input_shape=derivation.input_shape, hash=derivation.hash())
    graph.add_node("input", label=f"input {fmt(derivation.input_shape)}", op="input")
    counter = [0]

    def add(op: OpNode, kind: str) -> str:
        counter[0] += 1
        name = f"n{counter[0]}"
        graph.add_node(name, label=op_label(op), op=op.op, args=dict(op.args), kind=kind,
                       in_shape=op.in_shape, out_shape=op.out_shape)
        return name

    def link(src: str, dst: str, shape) -> None:
        graph.add_edge(src, dst, shape=fmt(shape) if shape else "")

    def visit(node: Node, src: str) -> str:
        """Wire ``node`` after graph node ``src``; return the node producing its output."""
        if isinstance(node, OpNode):
            if node.op == "identity":
                return src
            name = add(node, "unary")
            link(src, name, node.in_shape)
            return name
        if isinstance(node, RuleNode):
            for child in node.children:
                src = visit(child, src)
            return src
        assert isinstance(node, BranchNode)
        split = add(resolve_op(node.open), "split")
        link(src, split, node.in_shape)
        merge = add(resolve_op(node.close), "merge")
        for arm in node.arms:
            end = visit(arm, split)
            link(end, merge, arm.out_shape)
        return merge

    last = visit(derivation.root, "input")
    graph.add_node("output", label=f"output {fmt(derivation.output_shape)}", op="output")
    link(last, "output", derivation.output_shape)
    return graph


def to_dot(derivation: Derivation, title: str | None = None) -> str:
    """Graphviz DOT text of the network (render with ``dot -Tpng``)."""
    graph = to_networkx(derivation)
    lines = ["digraph archgram {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];']
    if title:
        lines.append(f'  label="{_esc(title)}"; labelloc=t;')
    colors = {"split": "#fdf1d6", "merge": "#fdf1d6", "input": "#dff5e1", "output": "#dff5e1"}
    for name, data in graph.nodes(data=True):
        fill = colors.get(data.get("kind") or data.get("op"), "#eef3fb")
        lines.append(f'  {name} [label="{_esc(data["label"])}", fillcolor="{fill}"];')
    for src, dst, data in graph.edges(data=True):
        lines.append(f'  {src} -> {dst} [label="{_esc(data.get("shape", ""))}", fontsize=9];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
