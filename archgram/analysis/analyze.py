"""``archgram analyze`` end to end: maps and distances on validation data, head
ablation, files."""
from __future__ import annotations

from pathlib import Path

import torch

from archgram.analysis import report
from archgram.analysis.capture import attention_layers, capture, heads_of
from archgram.analysis.importance import head_importance, predict
from archgram.analysis.patterns import summarize
from archgram.analysis.source import Loaded

#: Validation batches whose attention maps feed the distance profiles.
MAP_BATCHES = 4


def analyze(loaded: Loaded, out: Path, *, max_val: int = 256, ablate: bool = True) -> tuple[dict, list[str]]:
    """Analyse ``loaded`` on up to ``max_val`` validation examples; write ``out``."""
    model, task, bs = loaded.model, loaded.task, loaded.batch_size
    data = task.data(0)
    x, y = data.x_val[:max_val], data.y_val[:max_val]
    layers = attention_layers(model)
    with capture(model, maps=True) as cap, torch.no_grad():
        predict(model, x[: bs * MAP_BATCHES], bs)
    distance = cap.mean_distance()
    strength = cap.strength()
    result = {
        "source": loaded.description,
        "task": task.name,
        "val_examples": len(x),
        "distance_unit": "pixels" if any(op.grid for _, op in layers) else "tokens",
        "layers": [{"name": name, "heads": heads_of(op), "map": cap.how.get(name, "not reached by the forward pass"),
                    "mean_distance": distance.get(name), "strength_by_distance": strength.get(name),
                    "summary": op.summary} for name, op in layers],
        "importance": head_importance(model, task, x, y, bs).to_dict() if ablate else None,
    }
    for layer in result["layers"]:  # the paper's learned summary of per-patch attention patterns
        maps = cap.example.get(layer["name"])
        if maps is not None:
            codes, mse = summarize(maps.reshape(-1, maps.shape[-1]))
            layer["pattern_codes"], layer["pattern_mse"] = codes.tolist(), mse
    files = report.write(out, result, cap.example)
    return result, files
