"""PURE: the sandbox a template runs in, and the budget a tenant's template renders within.

Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: a
tenant-edited template cannot reach Python internals nor change its data, and a misspelt
variable is an error at render time instead of a silently empty invoice number. The sandbox
keeps a template from Python's internals, but not from work, so a tenant's template also
renders within a :class:`RenderBudget` of processor time and output, checked as it runs
(:func:`metered`); built-in templates are not metered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from gettext import NullTranslations
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from mailer.content.slots import SlotValues
from mailer.content.translation import TranslateLiterals

_DICT_ATTRIBUTES = frozenset(dir(dict))


@dataclass(frozen=True)
class RenderBudget:
    """How much processor time a tenant's template may use and how much it may write, per part.

    The sandbox keeps a template from Python's internals, but not from work: two nested
    ``range(100000)`` loops are ten billion turns with no output at all, a macro calling
    itself twice per level doubles at each one, and ``ns.s ~ ns.s`` in a loop doubles a
    string until the memory is gone. Every loop turn, call, concatenation and ``+`` checks the
    clock and sizes against this budget, and the output is counted as it is written, so such a
    template is stopped with a clear error instead of holding the engine (or ``template set``).
    """

    seconds: float
    max_chars: int


# At send time: a legitimate override renders in milliseconds, a large invoice in well under
# a second; the email's HTML part is far below 5 MB (Gmail clips past 102 kB).
RENDER_BUDGET = RenderBudget(seconds=5.0, max_chars=5_000_000)
# When an override is saved, against the kind's small sample context.
SAVE_BUDGET = RenderBudget(seconds=2.0, max_chars=1_000_000)


class BudgetExceeded(SecurityError):
    """A tenant's template went past its :class:`RenderBudget` (a Jinja ``SecurityError``:
    reported like the sandbox's other refusals, with the template's line)."""


class _Meter:
    """One render's running budget: its deadline and limits."""

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        # Processor time of this thread, not the wall clock: a legitimate template on a loaded
        # machine (or waiting for the GIL) is not refused, while a loop still burns its budget.
        self.deadline = time.thread_time() + budget.seconds
        self.produced = 0  # characters every ``{{ }}`` wrote, captured or not

    def produce(self, chars: int) -> None:
        """Count what an expression wrote: a ``{% set %}`` block or a macro collects its
        output before anything joins it, so the output's own count comes too late."""
        self.produced += chars
        self.size(self.produced)

    def tick(self) -> None:
        if time.thread_time() > self.deadline:
            raise BudgetExceeded(
                f"rendering took longer than {self.budget.seconds:g} s of processor time "
                "(a loop or a call that runs too long)"
            )

    def size(self, chars: int) -> None:
        if chars > self.budget.max_chars:
            raise BudgetExceeded(
                f"the template would write more than {self.budget.max_chars:,} characters"
            )


# The meter of the render running in this thread (renders run in worker threads): None while
# a built-in template renders, which is not metered.
_METER: ContextVar[_Meter | None] = ContextVar("dunmail_render_meter", default=None)


@contextmanager
def metered(budget: RenderBudget) -> Iterator[_Meter]:
    """Meter what runs inside against ``budget``: a render, and also compiling or analysing a
    tenant's template (Jinja's code generator folds filters on constants as it goes)."""
    meter = _Meter(budget)
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` passes here before it is written (Jinja's ``finalize``)."""
    meter = _METER.get()
    if meter is not None and isinstance(value, str):
        meter.produce(len(value))
    return value


def _loop(iterable: Iterable[Any]) -> Iterable[Any]:
    """Every ``{% for %}`` iterates through this (see :class:`_MeterLoops`)."""
    meter = _METER.get()
    if meter is None:
        return iterable
    return _metered_loop(iterable, meter)


def _metered_loop(iterable: Iterable[Any], meter: _Meter) -> Iterator[Any]:
    for item in iterable:
        meter.tick()
        yield item


@jinja2.pass_eval_context
def _concat(eval_ctx: nodes.EvalContext, parts: list[Any]) -> str:
    """``a ~ b``, as Jinja joins it, with the result's size checked."""
    joined = markup_join(parts) if eval_ctx.autoescape else str_join(parts)
    meter = _METER.get()
    if meter is not None:
        meter.tick()
        meter.size(len(joined))
    return joined


class _MeterLoops(NodeTransformer):
    """Route every loop's iterable and every ``~`` through the budget's filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802  # NodeTransformer API
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_budget_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        parts = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(parts, "_budget_concat", [], [], None, None, lineno=node.lineno)


# A width or count in a format string ("%999999999s", "{:>999999999}"): seven digits and more
# would pad the output past any budget before it could be counted.
_HUGE_WIDTH = re.compile(r"\d{7,}")
# String methods and filters whose integer arguments are the size of what they build.
_SIZED = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "wordwrap"})


def _check_sizes(name: str, subject: object, args: tuple[Any, ...], limit: int) -> None:
    """Refuse, before it runs, a string operation that would build more than ``limit``."""
    if name in _SIZED and any(isinstance(a, int) and abs(a) > limit for a in args):
        raise BudgetExceeded(f"{name}() with a size over {limit:,} characters")
    if name in ("format", "format_map") and isinstance(subject, str):
        if _HUGE_WIDTH.search(subject):
            raise BudgetExceeded("a format with a width of a million characters or more")
    if name == "replace" and isinstance(subject, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(subject) + 1 if not old else subject.count(old)
        if len(subject) + count * (len(new) - len(old)) > limit:
            raise BudgetExceeded(f"replace() would build more than {limit:,} characters")


def _sized_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that checks its sizes first while a tenant's template renders."""

    # Jinja passes a context, eval context or environment first to a filter marked so
    # (``replace`` is @pass_eval_context, ``wordwrap`` @pass_environment).
    skip = 1 if hasattr(original, "jinja_pass_arg") else 0

    def checked(*args: Any, **kwargs: Any) -> Any:
        meter = _METER.get()
        if meter is not None and len(args) > skip:
            meter.tick()
            value, rest = args[skip], args[skip + 1 :]
            subject = str(value) if name == "format" else value
            _check_sizes(name, subject, (*rest, *kwargs.values()), meter.budget.max_chars)
        return original(*args, **kwargs)

    if skip:
        checked.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return checked


# The largest string or list a template may build with ``*`` (a page of text is ~10 kB).
_MAX_PRODUCT = 100_000


class Sandbox(ImmutableSandboxedEnvironment):
    """A sandbox bound to one language: its templates are compiled already translated.

    Immutable: a tenant's template cannot change the data it renders (``invoice.update(...)``).
    ``*`` and ``**`` are checked, so ``'x' * 10**9`` is refused rather than eating the memory
    of the engine that renders every tenant's email.
    """

    translations: NullTranslations = NullTranslations()
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > _MAX_PRODUCT:
                        raise SecurityError("a template may not build text this large")
        meter = _METER.get()
        if meter is not None:
            meter.tick()
            if operator == "%" and isinstance(left, str) and _HUGE_WIDTH.search(left):
                raise BudgetExceeded("a format with a width of a million characters or more")
        result = super().call_binop(context, operator, left, right)
        if meter is not None and operator == "+" and isinstance(result, str | list | tuple):
            meter.size(len(result))
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Every call a template makes (a function, a macro, a method) first checks the
        budget, and a string method that would build text past it is refused before it runs."""
        meter = _METER.get()
        if meter is not None:
            meter.tick()
            subject = getattr(__obj, "__self__", None)
            if isinstance(subject, str):
                name = getattr(__obj, "__name__", "")
                _check_sizes(name, subject, (*args, *kwargs.values()), meter.budget.max_chars)
        return super().call(__context, __obj, *args, **kwargs)

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """Joins what a macro, a ``{% set %}`` block or a filter block captured (compiled
        templates call ``environment.concat``): sized before the join allocates it."""
        meter = _METER.get()
        if meter is None:
            return "".join(parts)
        pieces = parts if isinstance(parts, list) else list(parts)
        meter.tick()
        meter.size(sum(len(piece) for piece in pieces))
        return "".join(pieces)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``'{:>9}'.format(x)``, which the sandbox runs through its own formatter: refused,
        before it runs, with a width that would pad past the budget."""
        wrapped = super().wrap_str_format(value)
        subject = getattr(value, "__self__", None)
        if wrapped is None or not isinstance(subject, str):
            return wrapped
        run: Callable[..., str] = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            meter = _METER.get()
            if meter is not None:
                _check_sizes("format", subject, (), meter.budget.max_chars)
            return run(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``invoice.number`` on a context dict, without the AttributeError Jinja goes through.

        Same answer as the sandbox's: a dict's own attributes (``.items``) still come first.
        """
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        folder = TranslateLiterals(self.translations, autoescape=bool(self.autoescape))
        tree = folder.visit(tree)
        if self.autoescape:  # HTML: values become slots (mailer/content/slots.py)
            tree = SlotValues().visit(tree)
        return cast(nodes.Template, _MeterLoops().visit(tree))


def build_sandbox(
    loader: jinja2.BaseLoader,
    translations: NullTranslations,
    *,
    autoescape: bool,
    filters: Mapping[str, Callable[..., Any]],
) -> Sandbox:
    """A :class:`Sandbox` for one language and part, its budget hooks installed: every
    expression's output, loop turn and ``~`` is metered, and the filters that build text of a
    given size check it first. ``filters`` are the ones templates use (money, link, ...)."""
    env = Sandbox(
        loader=loader,
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates change with a deploy, not under a running engine
        extensions=["jinja2.ext.i18n"],
        finalize=_finalize,
    )
    env.translations = translations
    # {% trans %} compiles to "newstyle" gettext calls, which TranslateLiterals resolves; the
    # installed functions serve pgettext and calls on non-literals.
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    env.policies["ext.i18n.trimmed"] = True  # msgids without template indentation
    env.filters.update(filters, _budget_loop=_loop, _budget_concat=_concat)
    for name in ("center", "indent", "wordwrap", "format", "replace"):
        env.filters[name] = _sized_filter(name, env.filters[name])
    for name in ("_slot_text", "_slot_attr"):  # HTML only (mailer/content/slots.py)
        if name in env.filters:
            env.filters[name] = _counted_slot(env.filters[name])
    return env


def _counted_slot(original: Callable[..., Any]) -> Callable[..., Any]:
    """A slot filter that counts the value it replaces with a placeholder, so that a tenant's
    template is sized by what it writes, not by its placeholders."""

    def counted(context: Any, value: Any) -> Any:
        meter = _METER.get()
        if meter is not None and isinstance(value, str):
            meter.produce(len(value))
        return original(context, value)

    counted.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return counted


def active_meter() -> _Meter | None:
    """The meter of the tenant's template rendering in this thread, None for a built-in one."""
    return _METER.get()


def render_metered(
    compile_template: Callable[[], jinja2.Template],
    variables: dict[str, Any],
    budget: RenderBudget,
) -> str:
    """Compile and render a tenant's template within ``budget``; its output is counted as it
    is written. Compiling is metered too: Jinja folds a filter on constants while compiling
    (``'x' | center(10**9)``), and a refused fold is left for the render, which reports it."""
    with metered(budget) as meter:
        template = compile_template()
        chunks: list[str] = []
        written = 0
        for chunk in template.generate(variables):
            written += len(chunk)
            meter.size(written)
            chunks.append(chunk)
        return "".join(chunks)
