"""Grammar model: a parsed .pcfg with includes merged, names resolved, argument
values type-checked against the op registry, probabilities normalised, and every
production structured into sequences and branch groups.

This is where a grammar's meaning is fixed; the sampler only reads it.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from archgram.errors import GrammarError, Location
from archgram.grammar import syntax
from archgram.grammar.elements import (  # noqa: F401  (re-exported: the model's vocabulary)
    ENUMERATE_LIMIT,
    LIMIT_NAMES,
    ArgSpace,
    Arm,
    Branch,
    Elem,
    Limits,
    NonTerm,
    Production,
    Rule,
    Term,
)
from archgram.grammar.files import SHIPPED, load_all, shipped_grammars
from archgram.grammar.lint import LintReport, lint
from archgram.grammar.parser import parse_file, parse_text
from archgram.grammar.sampler import sample
from archgram.grammar.sizes import elem_size, minimum_sizes, prod_height, prod_size
from archgram.ops.registry import OpSpec, get_op, has_op
from archgram.registry import did_you_mean

TOLERANCE = 1e-6


def normalise(weights: list[float | None], loc: Location, what: str, locs: list[Location] | None = None) -> list[float]:
    """Turn @-annotations into probabilities: unannotated options share what the
    annotated ones leave; all-annotated sets are rescaled when they don't sum to 1.
    ``locs`` (one per option) lets a negative weight be reported where it is written."""
    for i, w in enumerate(weights):
        if w is not None and (w < 0 or math.isnan(w)):
            raise GrammarError(f"{what}: probability {w} is negative", locs[i] if locs else loc)
    given = sum(w for w in weights if w is not None)
    free = [i for i, w in enumerate(weights) if w is None]
    if not free:
        if given <= 0:
            raise GrammarError(f"{what}: probabilities sum to {given:g}; at least one must be positive", loc)
        return [w / given for w in weights]
    if given > 1 + TOLERANCE:
        raise GrammarError(
            f"{what}: annotated probabilities sum to {given:g} > 1, leaving nothing for "
            f"{len(free)} unannotated option(s); lower them or annotate every option",
            loc,
        )
    rest = max(0.0, 1.0 - given) / len(free)
    if rest == 0.0:
        raise GrammarError(f"{what}: annotated probabilities sum to 1, so the unannotated options could never be chosen", loc)
    return [rest if w is None else w for w in weights]


class Grammar:
    """A loaded grammar. Build with ``load_grammar(path)`` or ``Grammar.from_text``."""

    def __init__(self, files: list[syntax.FileSyntax], root: str, sources: dict[str, str]):
        self.root_file = root
        self.files = [f.path for f in files]
        self.name = Path(root).stem
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(sources.get(path, "").encode())
        self.sha256 = digest.hexdigest()
        self.params: dict[str, syntax.ParamSyntax] = {}
        self.limits = Limits()
        self.rules: dict[str, Rule] = {}
        self.warnings: list[str] = []
        self.notes: list[str] = []  # harmless facts, e.g. relative weights rescaled
        self._syntax: dict[str, syntax.RuleSyntax] = {}
        self._collect(files)
        self._resolve()
        self.start = self._pick_start(files)
        self.min_height, self.min_size = minimum_sizes(self.rules)
        self._cache_sizes()

    def _cache_sizes(self) -> None:
        def visit(e: Elem) -> None:
            if isinstance(e, Branch):
                e.arm_sizes = [a.copies * elem_size(a.elem, self.min_size) for a in e.arms]
                for a in e.arms:
                    visit(a.elem)
            elif isinstance(e, (Term, NonTerm)):
                e.min_size = elem_size(e, self.min_size)

        for rule in self.rules.values():
            for p in rule.productions:
                p.min_height = prod_height(p, self.min_height)
                p.min_size = prod_size(p, self.min_size)
                p.elem_sizes = [elem_size(e, self.min_size) for e in p.elems]
                for e in p.elems:
                    visit(e)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_text(cls, text: str, path: str = "<string>") -> Grammar:
        files, sources = load_all(parse_text(text, path), text, Path(path).parent if path != "<string>" else Path.cwd())
        return cls(files, path, sources)

    def _collect(self, files: list[syntax.FileSyntax]) -> None:
        limit_seen: dict[str, Location] = {}
        for f in files:
            for param in f.params:
                if param.name in self.params:
                    prev = self.params[param.name].loc
                    raise GrammarError(f"param '{param.name}' is already defined at {prev}", param.loc)
                self.params[param.name] = param
            for name, value, loc in f.limits:
                if name not in LIMIT_NAMES:
                    raise GrammarError(f"unknown limit '{name}'{did_you_mean(name, LIMIT_NAMES)}; limits are: {', '.join(LIMIT_NAMES)}", loc)
                if value <= 0:
                    raise GrammarError(f"limit {name} must be positive, got {value:g}", loc)
                limit_seen[name] = loc
                self.limits = self.limits.updated(**{name: value})
            for rule in f.rules:
                self._add_rule(rule)

    def _add_rule(self, rule: syntax.RuleSyntax) -> None:
        if rule.name in self.params:
            raise GrammarError(f"'{rule.name}' is both a param and a rule", rule.loc)
        old = self._syntax.get(rule.name)
        if not rule.extend:
            if old is not None:
                raise GrammarError(
                    f"rule '{rule.name}' is already defined at {old.loc}; write '{rule.name} +: ...' to add alternatives",
                    rule.loc,
                )
            self._syntax[rule.name] = rule
            return
        if old is None:
            raise GrammarError(f"'{rule.name} +:' extends a rule that is not defined (define it with ':' first)", rule.loc)
        added = [a.weight for a in rule.alternatives]
        if any(w is None for w in added):
            raise GrammarError("alternatives added with '+:' need an explicit @probability each", rule.loc)
        share = sum(added)
        if not 0 < share < 1:
            raise GrammarError(f"alternatives added with '+:' must take a share in (0, 1), got {share:g}", rule.loc)
        old_probs = normalise([a.weight for a in old.alternatives], old.loc, f"rule '{rule.name}'")
        kept = [
            syntax.AlternativeSyntax(a.items, p * (1 - share), a.loc) for a, p in zip(old.alternatives, old_probs)
        ]
        self._syntax[rule.name] = syntax.RuleSyntax(rule.name, kept + list(rule.alternatives), False, old.loc)

    def _pick_start(self, files: list[syntax.FileSyntax]) -> str:
        root = files[-1]
        starts = root.start or [s for f in files for s in f.start]
        if len(root.start) > 1:
            raise GrammarError(f"more than one 'start' (first at {root.start[0][1]})", root.start[1][1])
        if starts:
            name, loc = starts[0]
            if name not in self.rules:
                raise GrammarError(f"start symbol '{name}' is not a rule{did_you_mean(name, self.rules)}", loc)
            return name
        if not root.rules:
            raise GrammarError("grammar defines no rules", Location(root.path, 1, 1))
        return root.rules[0].name

    # ----------------------------------------------------------- resolving
    def _resolve(self) -> None:
        for name, syn in self._syntax.items():
            weights = [a.weight for a in syn.alternatives]
            if len(weights) > 1 and None not in weights and abs(sum(weights) - 1) > TOLERANCE:
                self.notes.append(f"{syn.loc}: rule '{name}': weights sum to {sum(weights):g}; rescaled to probabilities")
            probs = normalise([a.weight for a in syn.alternatives], syn.loc, f"rule '{name}'",
                              [a.loc for a in syn.alternatives])
            prods = [
                Production([], p, alt.loc, i, " ".join(_item_text(it) for it in alt.items))
                for i, (alt, p) in enumerate(zip(syn.alternatives, probs))
            ]
            self.rules[name] = Rule(name, prods, syn.loc)
        # Items first (so rule kinds can be derived), then branch structure.
        items = {
            name: [[self._item(it) for it in alt.items] for alt in syn.alternatives]
            for name, syn in self._syntax.items()
        }
        self._derive_rule_kinds(items)
        for name, alts in items.items():
            slot_rule = self.rules[name].kind != "unary"  # one split/merge op per production
            for prod, its in zip(self.rules[name].productions, alts):
                prod.elems = list(its) if slot_rule else self._structure(its, prod.loc)

    def _item(self, it: syntax.ItemSyntax) -> Term | NonTerm:
        if it.name in self._syntax:
            if it.args is not None:
                raise GrammarError(f"'{it.name}' is a rule and takes no arguments", it.loc)
            if it.repeat < 1:
                raise GrammarError("repeat count must be at least 1", it.loc)
            return NonTerm(it.name, it.repeat, it.loc)
        if not has_op(it.name):
            options = list(self._syntax) + [s for s in _op_names()]
            raise GrammarError(f"'{it.name}' is neither a rule nor a registered op{did_you_mean(it.name, options)}", it.loc)
        spec = get_op(it.name)
        if it.repeat < 1:
            raise GrammarError("repeat count must be at least 1", it.loc)
        term = Term(spec, self._args(spec, it), it.repeat, it.loc)
        term.combos = _combos(term) if term.combo_count <= ENUMERATE_LIMIT else None
        term.shared_args = any(space.shared for space in term.args.values())
        if spec.kind != "unary" and it.repeat != 1:
            raise GrammarError(f"{spec.kind} op '{spec.name}' cannot be repeated", it.loc)
        return term

    def _args(self, spec: OpSpec, it: syntax.ItemSyntax) -> dict[str, ArgSpace]:
        named: dict[str, syntax.ArgSyntax] = {}
        schema = list(spec.args)
        positional = [a for a in (it.args or []) if a.name is None]
        for a in it.args or []:
            if a.name is not None and positional and (it.args or []).index(a) < (it.args or []).index(positional[-1]):
                raise GrammarError("positional arguments must come before named ones", a.loc)
        for i, a in enumerate(positional):
            if i >= len(schema):
                raise GrammarError(f"op '{spec.name}' takes at most {len(schema)} argument(s), got {len(positional)}", a.loc)
            named[schema[i]] = a
        for a in it.args or []:
            if a.name is None:
                continue
            if a.name not in spec.args:
                raise GrammarError(f"op '{spec.name}' has no argument '{a.name}'{did_you_mean(a.name, schema)}; "
                                   f"it takes: {', '.join(schema) or 'no arguments'}", a.loc)
            if a.name in named:
                raise GrammarError(f"argument '{a.name}' given twice", a.loc)
            named[a.name] = a
        out: dict[str, ArgSpace] = {}
        for name, arg in spec.args.items():
            if name in named:
                out[name] = self._arg_space(spec, name, named[name].choice)
            elif arg.required:
                raise GrammarError(f"op '{spec.name}' needs argument '{name}' ({arg.type.__name__})", it.loc)
            else:
                out[name] = ArgSpace((arg.default,), (1.0,))
        return out

    def _arg_space(self, spec: OpSpec, name: str, choice: syntax.Choice) -> ArgSpace:
        arg = spec.args[name]
        # A lone reference to a 'global' param stays shared; anything else is expanded.
        if len(choice.options) == 1 and isinstance(choice.options[0].value, syntax.Symbol):
            ref = self.params.get(choice.options[0].value.name)
            if ref is not None and ref.shared:
                space = self._arg_space(spec, name, ref.choice)
                return ArgSpace(space.values, space.probs, shared=ref.name)
        # Each written option gets its share first (a param standing for several
        # values is one option); its values then split that share by their own odds.
        shares = normalise([opt.weight for opt in choice.options], choice.loc,
                           f"argument '{name}' of op '{spec.name}'", [opt.loc for opt in choice.options])
        values: list[Any] = []
        probs: list[float] = []
        for opt, share in zip(choice.options, shares):
            for v, w in self._values(spec, name, opt.value, opt.loc):
                try:
                    v = arg.check(v)
                except TypeError as exc:
                    raise GrammarError(f"argument '{name}' of op '{spec.name}': {exc}", opt.loc) from None
                values.append(v)
                probs.append(share * (1.0 if w is None else w))
        return ArgSpace(tuple(values), tuple(probs))

    def _values(self, spec: OpSpec, name: str, value: Any, loc: Location) -> list[tuple[Any, float | None]]:
        """Expand one option into concrete values (a param may stand for several)."""
        arg = spec.args[name]
        if isinstance(value, syntax.Symbol):
            if value.name in self.params:
                param = self.params[value.name]
                if param.shared:
                    raise GrammarError(f"global param '{value.name}' must be the whole argument value, not one option", loc)
                inner = self._arg_space(spec, name, param.choice)
                return list(zip(inner.values, inner.probs))
            if arg.type is bool and value.name in ("true", "false"):
                return [(value.name == "true", None)]
            if arg.type is str:
                return [(value.name, None)]
            if arg.type is dict:  # a structured value without arguments: ``full`` = ``full()``
                return [({"name": value.name}, None)]
            raise GrammarError(
                f"'{value.name}' is not a param{did_you_mean(value.name, self.params)} "
                f"(argument '{name}' of op '{spec.name}' takes {arg.type.__name__})",
                loc,
            )
        if isinstance(value, syntax.CallValue):
            if arg.type is not dict:
                raise GrammarError(f"argument '{name}' of op '{spec.name}' takes {arg.type.__name__}, not a structured value", loc)
            return [(_call_dict(value, loc), None)]
        if isinstance(value, tuple) and any(isinstance(v, (syntax.Symbol, syntax.CallValue)) for v in value):
            raise GrammarError("tuple values may only hold numbers and strings", loc)
        return [(value, None)]

    # ------------------------------------------------------------ structure
    def _derive_rule_kinds(self, items: dict[str, list[list[Term | NonTerm]]]) -> None:
        """A rule whose every production is one split (or merge) item is itself a
        split (merge) slot, so ``branching: branch_fn module module merge`` works."""
        changed = True
        while changed:
            changed = False
            for name, alts in items.items():
                rule = self.rules[name]
                kinds, counts = set(), set()
                for its in alts:
                    if len(its) != 1:
                        kinds.add("unary")
                        continue
                    it = its[0]
                    kinds.add(it.kind)
                    if it.kind == "split":
                        counts.add(self._branch_count(it))
                kind = kinds.pop() if len(kinds) == 1 else "unary"
                if kind == "split" and len(counts) != 1:
                    raise GrammarError(f"split rule '{name}' opens different branch counts {sorted(counts)}; "
                                       "keep one count per rule", rule.loc)
                if kind != rule.kind:
                    rule.kind = kind
                    rule.branches = counts.pop() if kind == "split" else 0
                    changed = True
            for alts in items.values():
                for its in alts:
                    for it in its:
                        if isinstance(it, NonTerm):
                            it.kind = self.rules[it.name].kind

    def _branch_count(self, it: Term | NonTerm) -> int:
        if isinstance(it, NonTerm):
            return self.rules[it.name].branches
        if it.combos is None:
            raise GrammarError(f"split op '{it.op.name}' has too many argument combinations ({it.combo_count})", it.loc)
        counts = {it.op.cls.branches(**combo) for combo, _ in it.combos}
        if len(counts) != 1:
            raise GrammarError(f"'{it.op.name}' must open a fixed number of branches, got {sorted(counts)}", it.loc)
        return counts.pop()

    def _structure(self, items: list[Term | NonTerm], loc: Location) -> list[Elem]:
        elems: list[Elem] = []
        i = 0
        while i < len(items):
            elem, i = self._structure_one(items, i)
            elems.append(elem)
        if not elems:
            raise GrammarError("empty production", loc)
        return elems

    def _structure_one(self, items: list[Term | NonTerm], i: int) -> tuple[Elem, int]:
        it = items[i]
        if it.kind == "unary":
            return it, i + 1
        if it.kind == "merge":
            raise GrammarError(f"'{it.label}' merges branches, but no split op opened them before it", it.loc)
        n = self._branch_count(it)
        arms: list[Arm] = []
        have, j = 0, i + 1
        while have < n:
            if j >= len(items):
                raise GrammarError(f"'{it.label}' opens {n} branches, but the production ends after {have}", it.loc)
            if items[j].kind == "merge":
                raise GrammarError(f"'{items[j].label}' closes the branches of '{it.label}' after {have} of {n}", items[j].loc)
            sub = items[j]
            elem, j = self._structure_one(items, j)
            copies = sub.repeat if not isinstance(elem, Branch) else 1
            if have + copies > n:
                raise GrammarError(f"'{sub.label}*{copies}' makes more branches than the {n} '{it.label}' opens", sub.loc)
            arms.append(Arm(_one_copy(elem), copies))
            have += copies
        if j >= len(items) or items[j].kind != "merge":
            got = f"'{items[j].label}'" if j < len(items) else "the end of the production"
            raise GrammarError(f"the {n} branches of '{it.label}' must be closed by a merge op (add, concat, ...), got {got}", it.loc)
        return Branch(it, arms, items[j], it.loc), j + 1

    # ------------------------------------------------------------ queries
    def production_probs(self, name: str) -> list[float]:
        return [p.prob for p in self.rules[name].productions]

    def effective_limits(self, limits: Limits | dict | None = None) -> Limits:
        """The grammar's own limits, replaced by ``limits`` or updated by a dict of them."""
        if limits is None:
            return self.limits
        return limits if isinstance(limits, Limits) else self.limits.updated(**limits)

    def sample(self, input_shape, seed: int | None = 0, **kwargs):
        """Sample one architecture for ``input_shape``; see ``archgram.grammar.sampler``."""
        return sample(self, tuple(input_shape), seed=seed, **kwargs)

    def lint(self, **kwargs) -> LintReport:
        return lint(self, **kwargs)

    def __repr__(self) -> str:
        return f"Grammar({self.name!r}, {len(self.rules)} rules, start={self.start!r})"


def iter_terms(elems):
    """Every op occurrence (Term) in ``elems``, branch slots and arms included."""
    for e in elems:
        if isinstance(e, Term):
            yield e
        elif isinstance(e, Branch):
            yield from iter_terms([e.open, e.close] + [a.elem for a in e.arms])


def _one_copy(elem: Elem) -> Elem:
    if isinstance(elem, (Term, NonTerm)) and elem.repeat != 1:
        clone = type(elem)(**{f.name: getattr(elem, f.name) for f in fields(elem)})
        clone.repeat = 1
        return clone
    return elem


def _call_dict(value: syntax.CallValue, loc: Location) -> dict:
    out: dict[str, Any] = {"name": value.name}
    for i, a in enumerate(value.args):
        if len(a.choice.options) != 1:
            raise GrammarError("choices inside a structured value are not supported; list whole values instead", loc)
        v = a.choice.options[0].value
        if isinstance(v, syntax.Symbol):
            v = v.name
        elif isinstance(v, syntax.CallValue):
            v = _call_dict(v, loc)
        out[a.name if a.name is not None else f"_{i}"] = v
    return out


def _combos(term: Term) -> list[tuple[dict[str, Any], float]]:
    """All argument combinations of an op occurrence with their probabilities."""
    names = list(term.args)
    spaces = [term.args[n] for n in names]
    out = []
    for picks in itertools.product(*[range(len(s.values)) for s in spaces]):
        combo = {n: s.values[i] for n, s, i in zip(names, spaces, picks)}
        prob = math.prod(s.probs[i] for s, i in zip(spaces, picks))
        out.append((combo, prob))
    return out


def _item_text(it: syntax.ItemSyntax) -> str:
    if it.args is None:
        text = it.name
    else:
        text = f"{it.name}(...)"
    return text + (f"*{it.repeat}" if it.repeat != 1 else "")


def _op_names():
    from archgram.ops.registry import all_ops

    return [s.name for s in all_ops()]


def load_grammar(path: str | Path) -> Grammar:
    """Load a grammar file (or the name of a shipped grammar, e.g. 'einspace')."""
    p = Path(path)
    if not p.exists():
        for candidate in (SHIPPED / p, SHIPPED / f"{p}.pcfg"):
            if candidate.is_file():
                p = candidate
                break
        else:
            shipped = ", ".join(shipped_grammars())
            raise GrammarError(f"grammar file '{path}' not found (shipped grammars: {shipped})")
    root = parse_file(p)
    files, sources = load_all(root, p.read_text(), p.parent)
    return Grammar(files, str(p), sources)
