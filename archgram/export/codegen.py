"""model.py: the network as plain PyTorch classes, one per grammar block.

A compiled model is a tree: ``TaskModel(stem, Network(body, head))`` whose body
nests ``Sequence`` (one rule expansion, named by its symbol) and ``Branch``
(split -> arms -> merge) modules around op modules. Each Sequence and Branch
becomes a generated class whose ``forward`` is written out call by call; each
op becomes a constructor call with the arguments it was built with, recorded
while the model is rebuilt (:func:`build_recorded`). The op classes themselves
come from :mod:`archgram.export.vendor`.

Attribute names are readable (``linear_0``, ``arm_1``), so the exported
state-dict keys differ from archgram's; ``keymap`` maps archgram's module paths
to the exported ones, and the weights are saved under the exported keys.
"""
from __future__ import annotations

import contextlib
import keyword
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archgram.compiler.modules import Branch, Network, Sequence
from archgram.errors import ExportError
from archgram.export.vendor import Vendor, Vendored


# ---------------------------------------------------------------- recording
@contextlib.contextmanager
def record_constructors(classes: set[type]) -> Iterator[dict[int, tuple[nn.Module, tuple, dict]]]:
    """While active, remember the arguments each instance of ``classes`` was built with."""
    records: dict[int, tuple[nn.Module, tuple, dict]] = {}
    saved: list[tuple[type, Any]] = []

    def wrap(orig):
        def __init__(self, *args, **kwargs):
            records.setdefault(id(self), (self, args, kwargs))
            orig(self, *args, **kwargs)

        return __init__

    try:
        for cls in classes:
            saved.append((cls, cls.__dict__.get("__init__")))
            cls.__init__ = wrap(cls.__init__)
        yield records
    finally:
        for cls, orig in reversed(saved):
            if orig is None:
                del cls.__init__
            else:
                cls.__init__ = orig


@contextlib.contextmanager
def trace_registries() -> Iterator[dict[int, set[str]]]:
    """While active, remember which parts each attention part registry resolved."""
    from archgram.ops.attention.parts import PartRegistry

    traced: dict[int, set[str]] = {}
    orig = PartRegistry.resolve

    def resolve(self, value):
        out = orig(self, value)
        traced.setdefault(id(self), set()).add(out[0].name)
        return out

    PartRegistry.resolve = resolve
    try:
        yield traced
    finally:
        PartRegistry.resolve = orig


def leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(path, module) of the op, stem and head modules under the block structure."""
    def walk(m: nn.Module, path: str):
        if isinstance(m, (Sequence, Branch, Network)) or type(m).__name__ == "TaskModel" or type(m) is nn.ModuleList:
            for name, child in m.named_children():
                yield from walk(child, f"{path}.{name}" if path else name)
        else:
            yield path, m

    yield from walk(model, "")


def build_recorded(build: Callable[[], nn.Module]) -> tuple[nn.Module, dict, dict]:
    """Build the model twice: once to learn its op classes, once recording how
    each was constructed (and which attention parts were resolved)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        probe = build()
    classes = {type(m) for _, m in leaves(probe) if type(m).__module__.startswith("archgram.")}
    with torch.random.fork_rng(), record_constructors(classes) as records, trace_registries() as traced:
        torch.manual_seed(0)
        model = build()
    return model, records, traced


# ------------------------------------------------------------------ literals
def literal(value: Any) -> str:
    """Python source for a constructor argument; ExportError for what has none."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "math.nan"
        if math.isinf(value):
            return "math.inf" if value > 0 else "-math.inf"
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in value.items()) + "}"
    raise ExportError(f"a {type(value).__name__} argument ({str(value)[:60]}) cannot be written as Python source")


def _ident(text: str) -> str:
    out = re.sub(r"\W", "_", str(text)).strip("_") or "block"
    if out[0].isdigit():
        out = f"_{out}"
    return f"{out}_" if keyword.iskeyword(out) else out


def _camel(text: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in _ident(text).split("_") if p) or "Block"


def _snake(text: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", _ident(text)).lower()


# ----------------------------------------------------------------- network
@dataclass
class Generated:
    network: str  # the generated classes, Model last
    vendored: str  # the op classes and what they need, copied from archgram
    imports: list[str]
    keymap: dict[str, str] = field(default_factory=dict)  # archgram leaf path -> exported leaf path
    classes: list[str] = field(default_factory=list)  # generated class names, outermost last
    vendored_modules: list[str] = field(default_factory=list)


class _Writer:
    def __init__(self, records, names: dict[type, str], taken: set[str]):
        self.records, self.names, self.taken = records, names, taken
        self.by_body: dict[str, str] = {}
        self.sources: list[str] = []
        self.keymap: dict[str, str] = {}

    def claim(self, base: str) -> str:
        name, i = base, 2
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def define(self, base: str, doc: str, attrs: list[tuple[str, str]], forward: list[str]) -> str:
        init = "\n".join(f"        self.{a} = {expr}" for a, expr in attrs)
        body = (
            f'    """{doc}"""\n\n'
            "    def __init__(self):\n"
            "        super().__init__()\n"
            + (init + "\n" if init else "")
            + "\n    def forward(self, x):\n"
            + "\n".join(f"        {line}" for line in forward)
            + "\n"
        )
        if body in self.by_body:  # identical blocks share one class
            return self.by_body[body]
        name = self.claim(base)
        self.by_body[body] = name
        self.sources.append(f"class {name}(nn.Module):\n{body}")
        return name

    def expr(self, m: nn.Module, apath: str, epath: str, hint: str = "") -> tuple[str, str]:
        """(constructor expression, short attribute stem) of module ``m``. A rule
        expansion with one child is that child (its class named after the rule)."""
        if isinstance(m, Sequence) and len(m) == 1:
            return self.expr(m[0], f"{apath}.0", epath, m.symbol)
        if isinstance(m, Sequence):
            attrs, forward = [], []
            for i, (name, child) in enumerate(m.named_children()):
                attr = f"{stem_of(child)}_{i}"
                code, _ = self.expr(child, f"{apath}.{name}", f"{epath}.{attr}")
                attrs.append((attr, code))
                forward.append(f"x = self.{attr}(x)")
            forward.append("return x")
            parts = " -> ".join(stem_of(c) for c in m.children()) or "(empty)"
            cls = self.define(_camel(m.symbol), f"<{m.symbol}>: {parts}", attrs, forward)
            return f"{cls}()", _snake(m.symbol)
        if isinstance(m, Branch):
            n = len(m.arms)
            split, _ = self.expr(m.split, f"{apath}.split", f"{epath}.split")
            arms = [self.expr(arm, f"{apath}.arms.{i}", f"{epath}.arm_{i}")[0] for i, arm in enumerate(m.arms)]
            merge, _ = self.expr(m.merge, f"{apath}.merge", f"{epath}.merge")
            attrs = [("split", split)] + [(f"arm_{i}", a) for i, a in enumerate(arms)] + [("merge", merge)]
            xs = [f"x{i}" for i in range(n)]
            forward = [f"{', '.join(xs)}{',' if n == 1 else ''} = self.split(x)",
                       "return self.merge([" + ", ".join(f"self.arm_{i}(x{i})" for i in range(n)) + "])"]
            doc = f"{stem_of(m.split)} -> {n} arms -> {stem_of(m.merge)}"
            cls = self.define(_camel(hint) if hint else "Branch", doc, attrs, forward)
            return f"{cls}()", "branch"
        return self.leaf(m, apath, epath), stem_of(m)

    def leaf(self, m: nn.Module, apath: str, epath: str) -> str:
        self.keymap[apath] = epath
        if type(m) is nn.Identity:
            return "nn.Identity()"
        rec = self.records.get(id(m))
        cls = type(m)
        if rec is None or cls not in self.names:
            raise ExportError(f"module {apath or '(root)'} ({cls.__module__}.{cls.__qualname__}) has no export "
                              "path: it is not an archgram op, stem or head built from literal arguments")
        _, args, kwargs = rec
        try:
            parts = [literal(a) for a in args] + [f"{k}={literal(v)}" for k, v in kwargs.items()]
        except ExportError as exc:
            raise ExportError(f"op {stem_of(m)} at {apath} has no export path: {exc}") from None
        return f"{self.names[cls]}({', '.join(parts)})"


def stem_of(m: nn.Module) -> str:
    """The attribute name stem of a child: its op name or rule symbol."""
    if isinstance(m, Sequence) and len(m) == 1:
        return _snake(m.symbol) if isinstance(m[0], Branch) else stem_of(m[0])
    if isinstance(m, Sequence):
        return _snake(m.symbol)
    if isinstance(m, Branch):
        return "branch"
    spec = getattr(type(m), "spec", None)
    return _ident(spec.name) if spec is not None and getattr(spec, "name", None) else _snake(type(m).__name__)


def generate(model: nn.Module, records: dict, traced: dict, title: str = "") -> Generated:
    """Source of model.py's classes for ``model`` (a TaskModel or a compiled Network)."""
    if type(model).__name__ == "TaskModel":
        stem, body, head = model.stem, model.network.body, model.network.head
        apaths = ("stem", "network.body", "network.head")
    elif isinstance(model, Network):
        stem, body, head = nn.Identity(), model.body, model.head
        apaths = ("", "body", "head")
    else:
        raise ExportError(f"cannot export a {type(model).__name__}: expected a compiled archgram network")
    vendor = Vendor(traced)
    keys: dict[type, tuple[str, str]] = {}
    for _, m in leaves(model):
        cls = type(m)
        if cls is nn.Identity or cls in keys:
            continue
        if not cls.__module__.startswith("archgram."):
            raise ExportError(f"module {cls.__module__}.{cls.__qualname__} has no export path: only archgram ops, "
                              "stems and heads (and nn.Identity) are written to model.py")
        keys[cls] = vendor.add_class(cls)
    vendored: Vendored = vendor.render(reserved={"Model", "load", "INPUT_SHAPE", "math", "torch", "nn"})
    names = {cls: vendored.names[key] for cls, key in keys.items()}
    w = _Writer(records, names, vendored.taken)
    w.taken.add("Model")
    stem_code = w.leaf(stem, apaths[0], "stem") if apaths[0] else "nn.Identity()"
    body_code, _ = w.expr(body, apaths[1], "body")
    head_code = w.leaf(head, apaths[2], "head")
    top = (
        "class Model(nn.Module):\n"
        f'    """{title or "The exported network"}: stem -> body -> head."""\n\n'
        "    def __init__(self):\n"
        "        super().__init__()\n"
        f"        self.stem = {stem_code}\n"
        f"        self.body = {body_code}\n"
        f"        self.head = {head_code}\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.body(self.stem(x)))\n"
    )
    network = "\n\n".join(s.rstrip("\n") + "\n" for s in [top] + w.sources[::-1])  # outermost first
    needed = {"import torch", "from torch import nn"} | ({"import math"} if "math." in network else set())
    imports = sorted(set(vendored.imports) | needed)
    return Generated(network, vendored.source, imports,
                     w.keymap, list(w.by_body.values()) + ["Model"], vendored.modules)


def map_key(key: str, keymap: dict[str, str]) -> str:
    """An archgram state-dict key under its exported name."""
    head, sep, rest = key, "", ""
    while True:
        if head in keymap:
            mapped = keymap[head]
            return f"{mapped}{sep}{rest}" if rest else mapped
        if "." not in head:
            raise ExportError(f"state-dict key {key} belongs to no exported module")
        head, last = head.rsplit(".", 1)
        rest, sep = (f"{last}.{rest}" if rest else last), "."
