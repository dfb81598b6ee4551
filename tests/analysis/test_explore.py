"""explore.html (S69): the paper's interactive, linked views of head importance,
strength by distance, pattern codes and per-query attention, from one selection."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

from archgram.analysis.explore import MAX_TOKENS, SCRIPT, explore_data, page

pytestmark = pytest.mark.catalog("S69")

#: A minimal DOM for the page's script under node: elements keep their innerHTML and
#: textContent, canvases count fills and record outlines.
DOM = """
const fs = require('fs');
const els = {};
const ctx = () => ({fills: 0, strokes: [], clearRect() {}, fillRect() { this.fills++; },
                    strokeRect(x, y, w, h) { this.strokes.push([x, y, w, h]); }});
const canvases = {map: ctx(), row: ctx()};
global.document = {getElementById(id) {
  if (!els[id]) els[id] = {innerHTML: '', textContent: id === 'data' ? fs.readFileSync(process.argv[2], 'utf8') : '',
    width: id === 'map' ? 320 : 480, height: id === 'map' ? 320 : 160, getContext: () => canvases[id]};
  return els[id];
}};
eval(fs.readFileSync(process.argv[3], 'utf8') + '\\nglobal.select = select;');
select(JSON.parse(process.argv[4]));
console.log(JSON.stringify({heads: els.heads.innerHTML, codes: els.codes.innerHTML, title: els.rowtitle.textContent,
                            strokes: canvases.map.strokes, rowFills: canvases.row.fills}));
"""


def _analysis(tokens: int = 9):
    g = torch.Generator().manual_seed(0)
    maps = {"a": torch.softmax(torch.randn(2, tokens, tokens, generator=g), -1),
            "b": torch.softmax(torch.randn(3, tokens, tokens, generator=g), -1)}
    result = {"source": "s", "task": "t", "distance_unit": "pixels",
              "importance": {"loss_delta": {"a": [0.1, 0.3], "b": [0.0, 0.2, 0.05]}},
              "layers": [{"name": name, "heads": m.shape[0], "strength_by_distance": torch.rand(m.shape[0], 4, generator=g).tolist(),
                          "pattern_codes": torch.randn(m.shape[0] * tokens, 2, generator=g).tolist()}
                         for name, m in maps.items()]}
    return result, maps


def embedded(html: str) -> dict:
    start = html.index("<script id='data' type='application/json'>") + len("<script id='data' type='application/json'>")
    return json.loads(html[start:html.index("</script>", start)])


def test_explore_page_embeds_every_heads_importance_profile_codes_and_map():
    result, maps = _analysis()
    data = embedded(page(explore_data(result, maps)))
    for layer, src in zip(data["layers"], result["layers"], strict=True):
        assert layer["importance"] == result["importance"]["loss_delta"][src["name"]]
        assert layer["strength"] == src["strength_by_distance"] and layer["codes"] == src["pattern_codes"]
        torch.testing.assert_close(torch.tensor(layer["maps"]), maps[src["name"]], atol=1e-4, rtol=0)
        assert layer["grid"] == 3  # 9 pixels: rows are drawn as 3 x 3 images
    long_result, long_maps = _analysis(MAX_TOKENS + 1)
    assert all(layer["maps"] is None for layer in explore_data(long_result, long_maps)["layers"])  # too heavy to embed


def test_explore_data_cannot_close_its_script_tag():
    result, maps = _analysis()
    result["source"] = "evil </script><script>alert(1)</script>"
    html = page(explore_data(result, maps))
    assert embedded(html)["source"] == result["source"] and html.count("</script>") == 2


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_views_follow_one_selection(tmp_path):
    """Selecting (layer 1, head 2, query 5) marks that head in the table, enlarges that
    one point among the codes, outlines that row of the map and draws that query's row."""
    result, maps = _analysis()
    (tmp_path / "data.json").write_text(json.dumps(explore_data(result, maps)))
    (tmp_path / "script.js").write_text(SCRIPT)
    (tmp_path / "dom.js").write_text(DOM)
    run = subprocess.run(["node", str(tmp_path / "dom.js"), str(tmp_path / "data.json"), str(tmp_path / "script.js"),
                          json.dumps({"layer": 1, "head": 2, "query": 5})], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["heads"].count("class='on'") == 1 and re.search(r"class='on'[^>]*select\(\{layer:1,head:2,", out["heads"])
    assert "rgb(255,95,95)' onclick='select({layer:0,head:1," in out["heads"]  # the most important head is darkest
    assert out["codes"].count("r='6'") == 1 and "head 2, query 5" in out["codes"]
    assert out["strokes"][-1][1] == pytest.approx(5 * 320 / 9)  # the map's outline sits on row 5
    assert out["title"] == "Query 5 of head 2, layer 1" and out["rowFills"] == 2 * 9  # first render + this one, 3 x 3 each
