"""README.md of an export: a model card (what, how found, how good, how to load)."""
from __future__ import annotations

import platform
from typing import Any

import torch

import archgram

_FILE_DOCS = {
    "model.py": "the network as plain PyTorch (no archgram import); `load()` returns it trained",
    "weights.safetensors": "trained weights, keys as in model.py's `Model`",
    "model.pt2": "torch.export program: `torch.export.load('model.pt2').module()`",
    "model.onnx": "ONNX graph (input `x`, output `y`)",
    "derivation.json": "the architecture as an archgram derivation (`archgram.Derivation.from_json`)",
    "README.md": "this card",
}


def _num(v: Any, fmt: str = ",") -> str:
    return "-" if v is None else format(v, fmt)


def _test_text(final: Any, trial: Any) -> str:
    """The test score the search stored for its final pick (read once, never again here)."""
    if not isinstance(final, dict) or final.get("test") is None:
        return "- (the study stores no test score)"
    if final.get("trial") != trial:
        return f"- (only the final pick, trial {final.get('trial')}, is scored on test)"
    return f"{final['test']:.4f} (the search's final pick, scored once on the test split; {final.get('weights')} weights)"


def _reference_text(ref: Any, score: Any) -> str:
    """The task's reference architecture under the study's recipe, and this trial's ratio to it."""
    if not isinstance(ref, dict) or not isinstance(ref.get("validation"), (int, float)):
        return "- (the study stores no reference)"
    text = f"{ref.get('grammar')}: validation {ref['validation']:.4f} under the same recipe"
    if isinstance(score, (int, float)) and ref["validation"] > 0 and score >= 0:
        text += f"; this trial / reference = {score / ref['validation']:.3f}"
    return text


def model_card(info: dict[str, Any], gen, title: str, x: torch.Tensor, params: int, latency_ms: float,
               files: list[str], notes: dict[str, str], diff: float) -> str:
    meta, attrs = info.get("meta", {}), info.get("attrs", {})
    score = info.get("score")
    metric = info.get("metric") or "score"
    shape = ", ".join(map(str, x.shape))
    rows = [
        ("grammar", f"{meta.get('grammar', '?')} (sha256 {meta.get('grammar_sha256', '?')})"),
        ("architecture hash", f"`{attrs.get('hash', '?')}`"),
        ("task", f"{info.get('task')} (input {tuple(x.shape)} {str(x.dtype).replace('torch.', '')})"),
        ("search", f"study `{info.get('study')}`, trial {info.get('trial')}, strategy {attrs.get('strategy', '?')}"
                   f" ({attrs.get('origin', '?')}), objectives {', '.join(meta.get('objectives', ['score']))}"),
        ("training", f"budget {attrs.get('budget', '?')}, {attrs.get('steps', '?')} steps, seed {attrs.get('seed', '?')}"),
        (f"validation {metric}", "-" if score is None else f"{score:.4f}"),
        (f"test {metric}", _test_text(meta.get("final"), info.get("trial"))),
        ("reference", _reference_text(meta.get("reference"), score)),
        ("parameters", _num(params)),
        ("FLOPs (one batch)", _num(attrs.get("flops"))),
        ("latency", f"{latency_ms:.2f} ms per batch of {x.shape[0]} (median of {info.get('latency_calls', 10)}, {platform.machine()} CPU, "
                    f"{torch.get_num_threads()} threads, torch {torch.__version__}; measured at export)"),
        ("weights", info.get("weights", "")),
        ("export check", f"model.py + weights reproduce the search's model output (max |diff| {diff:.1e})"),
    ]
    lines = [f"# {title}", "", f"Exported by archgram {archgram.__version__}. Blocks in model.py are named after "
             "the grammar rules that produced them; the op classes after them are copied from archgram, so the "
             "folder needs only torch and safetensors.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Files", ""]
    for f in _FILE_DOCS:
        if f in files:
            lines.append(f"- `{f}`: {_FILE_DOCS[f]}")
        elif f in notes:
            lines.append(f"- `{f}`: {notes[f]}")
    lines += [
        "", "## Load", "",
        "```python",
        "import torch",
        "from model import load, INPUT_SHAPE, INPUT_DTYPE   # run from this folder (or put it on sys.path)",
        "",
        "model = load()                                      # Model() + weights.safetensors, eval mode",
        "x = torch.zeros(INPUT_SHAPE, dtype=INPUT_DTYPE)      # a real batch in practice",
        "y = model(x)",
        "```",
        "",
        f"The network was typed for input shape ({shape}), batch size included: some ops fix it "
        "(as in the search, pad a smaller last batch to the full size).",
    ]
    if "model.pt2" in files:
        lines += ["", "Without model.py: `torch.export.load('model.pt2').module()(x)`."]
    lines += ["", "## Architecture", "", "```", *_outline(gen), "```", ""]
    return "\n".join(lines)


def _outline(gen) -> list[str]:
    """The generated block classes with their one-line docstrings."""
    out = []
    for block in gen.network.split("\nclass ")[0:]:
        head = block.lstrip().removeprefix("class ")
        name = head.split("(", 1)[0]
        doc = head.split('"""', 2)[1] if '"""' in head else ""
        out.append(f"{name}: {doc}")
    return out
