"""The einspace baselines (catalog S57): deterministic grammars parsed into einspace.pcfg."""
from __future__ import annotations

import pytest
import torch

import archgram
from archgram.errors import ArchgramError
from archgram.grammar.baselines import BASELINES, baseline, baseline_grammar, baseline_path
from archgram.grammar.model import iter_terms

pytestmark = pytest.mark.catalog("S57")

SHAPE = (2, 3, 32, 32)
SEQUENCE = (2, 40, 1)  # an MNIST-1D batch
SHAPES = {"resnet": SHAPE, "vit": SHAPE, "mlp_mixer": SHAPE, "cnn1d": SEQUENCE}
EXPECTED = {  # output shape for its input shape, parameter count (computed by hand, see below)
    "resnet": ((2, 512, 2, 2), 11_210_560),
    "vit": ((2, 64, 512), 4_269_568),
    "mlp_mixer": ((2, 64, 512), 2_434_048),
    "cnn1d": ((2, 5, 32), 6_336),
}


def conv(cin: int, cout: int, k: int) -> int:
    """im2col -> linear (with bias) -> col2im."""
    return cin * k * k * cout + cout


def norm(c: int) -> int:
    return 2 * c


def lin(cin: int, cout: int) -> int:
    return cin * cout + cout


def test_expected_counts_by_hand():
    stem = conv(3, 64, 3) + norm(64) + conv(64, 64, 3)
    block = lambda c: 2 * (conv(c, c, 3) + norm(c))  # noqa: E731
    down = lambda a, c: conv(a, c, 3) + norm(c) + conv(c, c, 3) + norm(c) + conv(a, c, 1) + norm(c)  # noqa: E731
    resnet = stem + 2 * block(64) + sum(down(a, c) + block(c) for a, c in [(64, 128), (128, 256), (256, 512)])
    assert resnet == EXPECTED["resnet"][1]  # the ResNet-18 ballpark (~11M)
    patch = lin(48, 512) + 64 * 512  # patchify linear, posenc
    head = 3 * lin(512, 64)
    layer = 4 * head + lin(256, 512) + norm(512) + 2 * lin(512, 512) + norm(512)
    assert patch + 4 * layer == EXPECTED["vit"][1]
    mixer = norm(512) + lin(64, 256) + lin(256, 64) + lin(512, 256) + lin(256, 512)
    assert patch + 8 * mixer == EXPECTED["mlp_mixer"][1]
    conv1d = lambda cin, cout: cin * 3 * cout + cout  # noqa: E731 - kernel 3, with bias
    assert conv1d(1, 32) + 2 * conv1d(32, 32) == EXPECTED["cnn1d"][1]


@pytest.fixture(scope="module")
def einspace():
    return archgram.load_grammar("einspace")


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_parses_into_einspace_compiles_and_runs(name, einspace):
    shape = SHAPES[name]
    d = baseline(name, einspace, shape)
    assert d.grammar["name"] == "einspace"
    source = baseline_grammar(name).sample(shape, seed=0)
    assert d.hash() == source.hash()  # the same network
    out_shape, params = EXPECTED[name]
    model = archgram.compile(d)
    assert model.num_params() == params == d.stats["params"]
    with torch.no_grad():
        y = model(torch.randn(*shape))
    assert tuple(y.shape) == out_shape == d.output_shape
    assert torch.isfinite(y).all()


def test_baseline_by_grammar_name_and_default_shape():
    d = baseline("vit")
    assert d.input_shape == (8, 3, 32, 32)
    assert d.output_shape == (8, 64, 512)


def test_deterministic_grammars_have_one_derivation():
    for name in BASELINES:
        g = baseline_grammar(name)
        for rule in g.rules.values():
            assert len(rule.productions) == 1, (name, rule.name)
            for term in iter_terms(rule.productions[0].elems):
                assert len(term.combos) == 1, (name, rule.name, term.op.name)
        assert baseline_path(name).is_file()




def test_cnn1d_is_the_papers_cnn_as_conv1d(einspace):
    """Parsed into einspace, cnn1d computes three stride-2 Conv1d + leaky ReLU
    layers: checked against F.conv1d with the linears' weights as kernels."""
    torch.manual_seed(0)
    model = archgram.compile(baseline("cnn1d", einspace, SEQUENCE))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    x = torch.randn(*SEQUENCE)
    h = x.transpose(1, 2)  # (B, D, L)
    for lin in linears:
        kernel = lin.weight.reshape(lin.out_features, -1, 3)  # features channel-major, kernel position last
        h = torch.nn.functional.leaky_relu(torch.nn.functional.conv1d(h, kernel, lin.bias, stride=2, padding=1), 0.01)
    with torch.no_grad():
        torch.testing.assert_close(model(x), h.transpose(1, 2))
    assert len(linears) == 3


def test_unknown_baseline_lists_the_names():
    with pytest.raises(ArchgramError, match="resnet, vit, mlp_mixer"):
        baseline("vgg")


def test_baselines_exceed_einspace_limits_and_say_so(einspace):
    d = baseline("resnet", einspace, SHAPE)
    assert d.depth() > einspace.limits.depth
    assert any(x.startswith("params") for x in d.stats["exceeds"])
