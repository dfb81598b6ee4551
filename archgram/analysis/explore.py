"""Linked, interactive views of an analysis: ``explore.html`` (catalog S69).

Li et al. browse their three analyses interactively: pick a head by its
importance, see how its attention strength falls with distance, find groups of
patches that attend alike in the autoencoder's latent space, and drill down
to one patch's attention. This page does the same from the numbers
``archgram analyze`` computed, in one self-contained file (inline data and
script, no network), written unattended like the rest of the report:

  heads     layers x heads, shaded by importance (val-loss increase when masked);
            a click selects the head
  profile   the selected head's attention strength at each distance
  codes     the layer's 2-D pattern codes, one point per (head, query), the
            selected head's in front; a click selects that head and query
  map       the selected head's attention map, the selected query's row marked
  row       the selected query's attention (an image when the tokens are pixels)

Every view redraws from one selection (layer, head, query), so they stay linked.
"""
from __future__ import annotations

import html
import json
import math

import torch

#: Maps over more tokens than this are left out of the page (it would weigh megabytes);
#: the other views still work.
MAX_TOKENS = 256


def explore_data(result: dict, maps: dict[str, torch.Tensor]) -> dict:
    """What the page embeds: per layer its importance, strength profiles, pattern
    codes and the first example's maps (H, N, N), rounded to 4 decimals."""
    imp = result.get("importance") or {}
    layers = []
    for layer in result["layers"]:
        m = maps.get(layer["name"])
        n = None if m is None else int(m.shape[-1])
        side = math.isqrt(n) if n else 0
        layers.append({
            "name": layer["name"], "heads": layer["heads"], "tokens": n,
            "importance": (imp.get("loss_delta") or {}).get(layer["name"]),
            "mean_distance": layer.get("mean_distance"),
            "strength": layer.get("strength_by_distance"),
            "codes": layer.get("pattern_codes"),
            "maps": None if m is None or n > MAX_TOKENS else torch.round(m.float(), decimals=4).tolist(),
            "grid": side if result.get("distance_unit") == "pixels" and n and side * side == n else None,
        })
    return {"source": result["source"], "task": result["task"], "distance_unit": result["distance_unit"], "layers": layers}


def page(data: dict) -> str:
    """The self-contained explore.html for ``explore_data``'s output."""
    payload = json.dumps(data).replace("</", "<\\/")  # the data cannot close its script tag
    return (_HEAD.replace("{title}", html.escape(f"{data['source']} on {data['task']}"))
            + f"<script id='data' type='application/json'>{payload}</script>\n<script>{SCRIPT}</script></body></html>\n")


_HEAD = """<!doctype html><html><head><meta charset='utf-8'><title>archgram explore</title>
<style>body{font-family:sans-serif;margin:1em 2em}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}
td{border:1px solid #ccc;padding:2px 6px;cursor:pointer;text-align:right}td.on{outline:3px solid #d33}
svg,canvas{border:1px solid #ddd}h3{margin:.3em 0}</style></head><body>
<h1>Explore attention</h1><p>{title}. Click a head, or a point of the pattern codes.</p>
<div class='grid'><div><h3>Heads (shade: val-loss increase when masked)</h3><div id='heads'></div>
<h3>Strength by distance</h3><svg id='profile' width='480' height='160'></svg></div>
<div><h3>Pattern codes (autoencoder, one point per head and query)</h3><svg id='codes' width='480' height='320'></svg></div>
<div><h3>Attention map (example 0)</h3><canvas id='map' width='320' height='320'></canvas></div>
<div><h3 id='rowtitle'>Query row</h3><canvas id='row' width='480' height='160'></canvas></div></div>
"""

SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const S = {layer: 0, head: 0, query: 0};
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
function select(patch) { Object.assign(S, patch); render(); }
function layer() { return D.layers[S.layer]; }
function heads() {
  const all = D.layers.flatMap(l => l.importance || []);
  const top = Math.max(1e-12, ...all.map(Math.abs));
  let t = '<table>';
  D.layers.forEach((l, i) => {
    t += '<tr><th>L' + i + '</th>';
    for (let h = 0; h < l.heads; h++) {
      const v = l.importance ? l.importance[h] : null;
      const shade = v === null ? 255 : Math.round(255 - 160 * Math.abs(v) / top);
      const on = i === S.layer && h === S.head ? " class='on'" : '';
      t += '<td' + on + " style='background:rgb(255," + shade + ',' + shade + ")' onclick='select({layer:" + i
        + ',head:' + h + ",query:0})'>h" + h + (v === null ? '' : ' ' + v.toFixed(3)) + '</td>';
    }
    t += '</tr>';
  });
  document.getElementById('heads').innerHTML = t + '</table>';
}
function profile() {
  const svg = document.getElementById('profile');
  const p = layer().strength ? layer().strength[S.head] : [];
  const w = 480 / Math.max(1, p.length), top = Math.max(1e-12, ...p);
  svg.innerHTML = p.map((v, d) => "<rect x='" + d * w + "' y='" + (150 - 140 * v / top) + "' width='" + (w - 1)
    + "' height='" + 140 * v / top + "' fill='#1f77b4'><title>distance " + d + ': ' + v.toFixed(4) + '</title></rect>').join('');
}
function codes() {
  const svg = document.getElementById('codes'), c = layer().codes;
  if (!c) { svg.innerHTML = "<text x='10' y='20'>no pattern codes for this layer</text>"; return; }
  const xs = c.map(p => p[0]), ys = c.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) + 1e-9, y0 = Math.min(...ys), y1 = Math.max(...ys) + 1e-9;
  const n = c.length / layer().heads;
  const dots = c.map((p, i) => {
    const h = Math.floor(i / n), q = i % n, mine = h === S.head;
    return [mine, "<circle cx='" + (10 + 460 * (p[0] - x0) / (x1 - x0)) + "' cy='" + (310 - 300 * (p[1] - y0) / (y1 - y0))
      + "' r='" + (mine && q === S.query ? 6 : 3) + "' fill='" + COLORS[h % COLORS.length] + "' opacity='" + (mine ? 1 : 0.2)
      + "' onclick='select({head:" + h + ',query:' + q + "})'><title>head " + h + ', query ' + q + '</title></circle>'];
  });
  svg.innerHTML = dots.filter(d => !d[0]).concat(dots.filter(d => d[0])).map(d => d[1]).join('');
}
function paint(canvas, rows, mark) {
  const ctx = canvas.getContext('2d'), n = rows.length, m = rows[0].length;
  const cw = canvas.width / m, ch = canvas.height / n, top = Math.max(1e-12, ...rows.flat());
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  rows.forEach((r, i) => r.forEach((v, j) => {
    const g = Math.round(255 * (1 - v / top));
    ctx.fillStyle = 'rgb(' + g + ',' + g + ',255)';
    ctx.fillRect(j * cw, i * ch, Math.ceil(cw), Math.ceil(ch));
  }));
  if (mark !== null) { ctx.strokeStyle = '#d33'; ctx.strokeRect(0, mark * ch, canvas.width, ch); }
}
function maps() {
  const l = layer(), mapCanvas = document.getElementById('map'), rowCanvas = document.getElementById('row');
  if (!l.maps) { mapCanvas.getContext('2d').clearRect(0, 0, 320, 320); rowCanvas.getContext('2d').clearRect(0, 0, 480, 160); return; }
  const m = l.maps[S.head], r = m[S.query];
  paint(mapCanvas, m, S.query);
  const g = l.grid;
  paint(rowCanvas, g ? Array.from({length: g}, (_, i) => r.slice(i * g, (i + 1) * g)) : [r], null);
  document.getElementById('rowtitle').textContent = 'Query ' + S.query + ' of head ' + S.head + ', layer ' + S.layer;
}
function render() { heads(); profile(); codes(); maps(); }
render();
"""
