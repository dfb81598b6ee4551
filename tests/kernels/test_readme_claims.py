"""The README's kernel section quotes measured numbers; each is recomputed here
from the committed result files in experiments/kernels/ (see its README for
the device and command of each), so a claim cannot drift from its data. A
claim without a file behind it belongs in neither README."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments" / "kernels"


def kernel_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Kernels and benchmarks")
    return " ".join(text[start:text.index("\n## ", start + 1)].split())


def rows(name: str) -> list[dict]:
    return json.loads((EXP / name).read_text())


def span(values, digits: int = 2) -> str:
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{lo}x" if lo == hi else f"{lo}-{hi}x"


def flash(name="bench_flash.json", **match):
    return [r for r in rows(name) if r["N"] == 4096 and all(r[k] == v for k, v in match.items())]


def ratio(r, num, den):
    return r[num] / r[den]


def over_softmax(score: str, mask: str, d: int, name="bench_flash.json") -> float:
    """Our kernel's forward time for ``score`` over our softmax's, same head dim and mask."""
    (mine,) = flash(name, score=score, mask=mask, D=d)
    (soft,) = flash(name, score="softmax", mask=mask, D=d)
    return mine["kernel_fwd_ms"] / soft["kernel_fwd_ms"]


def softmax_vs(baseline: str, phase: str) -> list[float]:
    return [ratio(r, f"{baseline}_{phase}_ms", f"kernel_{phase}_ms")
            for r in flash(score="softmax") if r["mask"] in ("", "causal=True")]


def linear(name="bench_linear.json", **match):
    return [r for r in rows(name) if all(r[k] == v for k, v in match.items())]


def per_token_growth() -> list[float]:
    out = []
    for d in (64, 128):
        for mode in ("fwd", "fwd+bwd"):
            (short,), (long,) = linear(D=d, mode=mode, N=1024), linear(D=d, mode=mode, N=65536)
            out.append(long["linear_us_per_token"] / short["linear_us_per_token"])
    return out


def fla_claims() -> tuple[str, str]:
    """(how much faster ours is where it is, how much faster fla is where it is),
    checking that fla wins only at head dim 128 with batch <= 4."""
    fwd = linear("bench_linear_vs_fla.json", mode="fwd")
    ours = [r["fla_ms"] / r["linear_ms"] for r in fwd if r["fla_ms"] >= r["linear_ms"]]
    theirs = [r for r in fwd if r["fla_ms"] < r["linear_ms"]]
    assert all(r["D"] == 128 and r["B"] <= 4 for r in theirs)
    return span(ours, 1), span([r["linear_ms"] / r["fla_ms"] for r in theirs])


def decode() -> tuple[str, str]:
    """(ms, TB/s) of our graphed decode step, from bench_decode.md."""
    lines = [ln for ln in (EXP / "bench_decode.md").read_text().splitlines() if re.match(r"\| \d", ln)]
    ms, tbs = [], []
    for ln in lines:
        m = re.search(r"\| ([\d.]+) \(([\d.]+)\) \| [\d.e+-]+ \|$", ln)
        ms.append(float(m.group(1)))
        tbs.append(float(m.group(2)))
    return span(ms), span(tbs, 1)


def head_dims(phase: str, dims=(80, 96)) -> list[float]:
    """Flex time over ours at the padded head dims, from the head-dim run."""
    return [ratio(r, f"flex_{phase}_ms", f"kernel_{phase}_ms")
            for r in rows("bench_flash_head_dims.json") if "N" in r and r["D"] in dims]


def tile_sweep(d: int, tiles: str) -> list[float]:
    """Flex/kernel forward of one tile config at head dim d, from the sweep table."""
    text = (EXP / "bench_flash_head_dims.md").read_text()
    return [float(m.group(1)) for m in re.finditer(rf"^\| {d} \| [^|]+ \| {re.escape(tiles)}[^|]* \| [\d.]+ \| [\d.]+ \| ([\d.]+)x \|$",
                                                   text, re.M)]


CLAIMS = {
    "softmax forward vs Flex": (lambda: span(softmax_vs("flex", "fwd")), "runs at {}"),
    "softmax forward vs SDPA-flash": (lambda: span(softmax_vs("sdpa_flash", "fwd"), 1), "causal; {} SDPA-flash"),
    "forward+backward vs Flex": (lambda: span(softmax_vs("flex", "fwdbwd")), "forward+backward {} Flex"),
    "sigmoid": (lambda: span([over_softmax("sigmoid", "", d) for d in (64, 128)]), "sigmoid attention costs {}"),
    "soft-cap": (lambda: span([over_softmax("softcap", "causal=True", 64, "bench_flash_softplus_softcap.json"),
                              over_softmax("softcap", "causal=True", 128)]), "soft-cap {}"),
    "clipped": (lambda: span([over_softmax("clipped", "", 64)], 1), "clipped softmax {}"),
    "softplus": (lambda: span([over_softmax("softplus", "causal=True", 64, "bench_flash_softplus_softcap.json")], 1),
                 "softplus re-weighting {}"),
    "linear vs softmax at 4k": (lambda: span([r["flash_ms"] / r["linear_ms"] for r in linear(mode="fwd", N=4096)], 0),
                                "linear attention is {} faster than our softmax at 4k"),
    "linear vs softmax at 64k": (lambda: span([r["flash_ms"] / r["linear_ms"] for r in linear(mode="fwd", N=65536)],
                                              0), "and {} at 64k"),
    "linear vs fla": (lambda: fla_claims()[0], "{} faster than flash-linear-attention's forward"),
    "fla vs linear": (lambda: fla_claims()[1], "(fla {} faster)"),
    "linear growth to 64k": (lambda: span(per_token_growth(), 1), "grows {} by 64k tokens"),
    "head dims 80/96 forward": (lambda: span(head_dims("fwd")), "the softmax forward runs at {} Flex"),
    "head dims 80/96 fwd+bwd": (lambda: span(head_dims("fwdbwd")), "forward+backward {} Flex; at head dim 256"),
    "head dim 256 table tiles": (lambda: span(head_dims("fwd", (256,))), "tiles (64, 32, 4, 3) run at {} Flex's"),
    "head dim 256 old tiles": (lambda: span(tile_sweep(256, "(64, 32, 8, 2)")), "in the tile sweep: {})"),
    "head dim 256 fwd+bwd": (lambda: span(head_dims("fwdbwd", (256,))), "forward+backward at {} Flex"),
    "decode ms": (lambda: decode()[0].removesuffix("x"), "decode ({} ms"),
    "decode TB/s": (lambda: decode()[1].removesuffix("x"), "{} TB/s of cache read"),
}


@pytest.mark.parametrize("name", CLAIMS)
def test_readme_kernel_numbers_match_the_committed_results(name):
    compute, phrase = CLAIMS[name]
    want = phrase.format(compute())
    assert want in kernel_section(), f"README should say {want!r} (recomputed from experiments/kernels)"


def test_every_result_file_the_readmes_cite_exists():
    text = kernel_section() + (EXP / "README.md").read_text()
    cited = set(re.findall(r"`((?:experiments/kernels/)?[\w/]+\.(?:md|json|png|txt|py|sh)(?:\|[\w|]+)?)`", text))
    assert cited
    for item in cited:
        stem, *exts = item.removeprefix("experiments/kernels/").split("|")
        base = stem.rsplit(".", 1)[0]
        for ext in [stem.rsplit(".", 1)[1], *exts]:
            where = [folder / f"{base}.{ext}" for folder in (EXP, ROOT, ROOT / "archgram" / "kernels")]
            assert any(p.exists() for p in where), f"{item}: none of {where}"
