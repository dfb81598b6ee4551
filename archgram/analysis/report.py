"""The analysis as files: analysis.json, PNGs, a self-contained index.html
(inline CSS, images linked by relative path, no scripts) and explore.html, the
interactive linked views (explore.py)."""
from __future__ import annotations

import html
import json
from pathlib import Path

from archgram.analysis import explore, plots


def _row(cells, tag="td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def write(out: Path, result: dict, maps: dict) -> list[str]:
    """Write every file into ``out``; returns their names."""
    out.mkdir(parents=True, exist_ok=True)
    layers = [layer["name"] for layer in result["layers"]]
    files = []
    for i, layer in enumerate(result["layers"]):
        if layer["name"] in maps:
            name = f"attention_L{i}.png"
            plots.attention_maps(out / name, maps[layer["name"]], f"L{i} {layer['name']}: {layer['map']} (example 0)")
            layer["png"] = name
            files.append(name)
        if layer.get("pattern_codes"):
            name = f"patterns_L{i}.png"
            plots.pattern_codes(out / name, layer["pattern_codes"], layer["heads"],
                                f"L{i}: autoencoder codes of per-query attention patterns")
            files.append(name)
    imp = result.get("importance")
    if imp:
        plots.importance(out / "importance.png", layers, [imp["loss_delta"][n] for n in layers],
                         "val loss increase when the head is masked")
        files.append("importance.png")
    dist = {layer["name"]: layer["mean_distance"] for layer in result["layers"] if layer.get("mean_distance")}
    if dist:
        plots.distances(out / "distance.png", [n for n in layers if n in dist], [dist[n] for n in layers if n in dist],
                        result["distance_unit"])
        files.append("distance.png")
    (out / "analysis.json").write_text(json.dumps(result, indent=2) + "\n")
    files.append("analysis.json")
    (out / "explore.html").write_text(explore.page(explore.explore_data(result, maps)))
    files.append("explore.html")
    (out / "index.html").write_text(_html(result, files))
    files.append("index.html")
    return files


def _html(result: dict, files: list[str]) -> str:
    e = html.escape
    imp = result.get("importance")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>archgram analyze</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>Attention analysis</h1><p>{e(result['source'])}; task <b>{e(result['task'])}</b>, "
        f"{result['val_examples']} validation examples. Interactive, linked views: "
        "<a href='explore.html'>explore.html</a>.</p>",
    ]
    if imp:
        parts.append(f"<p>Validation loss {_num(imp['base_loss'])}, {e(imp['metric'])} {_num(imp['base_metric'])}.</p>")
    parts.append("<h2>Head importance (ablation)</h2><p>Loss increase / metric drop when one head's output is zeroed "
                 "(Michel et al. 2019).</p><table>")
    width = max(layer["heads"] for layer in result["layers"])
    parts.append(_row(["layer", "map"] + [f"h{h}" for h in range(width)], "th"))
    for i, layer in enumerate(result["layers"]):
        cells = [f"L{i} {e(layer['name'])}", e(layer["map"])]
        for h in range(width):
            if imp and h < layer["heads"]:
                cells.append(f"{_num(imp['loss_delta'][layer['name']][h])} / {_num(imp['metric_drop'][layer['name']][h])}")
            else:
                cells.append("")
        parts.append(_row(cells))
    parts.append("</table>")
    if "importance.png" in files:
        parts.append("<p><img src='importance.png' alt='importance'></p>")
    parts.append(f"<h2>Mean attention distance ({e(result['distance_unit'])})</h2><table>")
    parts.append(_row(["layer"] + [f"h{h}" for h in range(width)], "th"))
    for i, layer in enumerate(result["layers"]):
        d = layer.get("mean_distance")
        parts.append(_row([f"L{i}"] + [(_num(d[h]) if d and h < len(d) else ("n/a" if h < layer["heads"] else ""))
                                       for h in range(width)]))
    parts.append("</table>")
    if "distance.png" in files:
        parts.append("<p><img src='distance.png' alt='distance'></p>")
    parts.append("<h2>Attention maps</h2>")
    for i, layer in enumerate(result["layers"]):
        if layer.get("png"):
            parts.append(f"<h3>L{i} {e(layer['name'])}</h3><p><a href='{layer['png']}'><img src='{layer['png']}' "
                         f"alt='L{i}'></a></p>")
        else:
            parts.append(f"<h3>L{i} {e(layer['name'])}</h3><p>n/a: {e(layer['map'])}</p>")
    parts.append("<p>Data: <a href='analysis.json'>analysis.json</a></p></body></html>\n")
    return "\n".join(parts)
