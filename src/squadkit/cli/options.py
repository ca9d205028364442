"""How every command declares its options: one mechanism, from declarations.

An ``Opt`` is one option or argument: the keyword the command receives, its shown flags, and the
older spellings it also accepts (hidden from ``--help``; every long flag's snake_case spelling too,
as run_squad wrote them). ``setting_opts`` makes them from the settings table, ``dataclass_opts``
from a settings dataclass (``TrainConfig``, ``ServeSettings``); ``command`` registers a function
taking ``Flags``: each value, and the spelling the user typed for it (errors name that spelling).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import typer

from ..errors import SquadkitError, first_line
from ..settings import BY_NAME, Given, given_options

HELP = {"help_option_names": ["-h", "--help"]}
ARGV_KEY = "squadkit.argv"  # the context's record of the words the command was given


@dataclass(frozen=True)
class Opt:
    """One option (or positional argument) of a command."""

    name: str  # the keyword the command receives
    help: str
    kind: Any = str  # the value's type (Optional[...] allowed)
    default: Any = None  # ... = required
    flags: tuple[str, ...] = ()  # shown; default: "--" + the name with dashes ("--x/--no-x" for a bool)
    aliases: tuple[str, ...] = ()  # older long spellings, accepted and hidden
    argument: bool = False
    metavar: Optional[str] = None
    show_default: Any = True  # typer's: the default is shown where there is one
    hidden: bool = False

    @property
    def is_bool(self) -> bool:
        return _base(self.kind) is bool

    @property
    def decls(self) -> tuple[str, ...]:
        if self.flags:
            return self.flags
        flag = "--" + self.name.replace("_", "-")
        return (f"{flag}/--no-{flag[2:]}",) if self.is_bool else (flag,)

    @property
    def long(self) -> str:
        """The shown long flag (an argument: its name in capitals)."""
        if self.argument:
            return self.metavar or self.name.upper()
        return next(d.split("/")[0] for d in self.decls if d.startswith("--"))

    def spellings(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """(shown, shown off-switches, hidden, hidden off-switches): the flags, then the aliases and every
        long flag's snake_case spelling (a bool pair's aliases get off-switches too)."""
        shown, shown_off = [], []
        for decl in self.decls:
            on, _, off = decl.partition("/")
            shown.append(on)
            if off:
                shown_off.append(off)
        hidden = _spelled(self.aliases, shown)
        hidden_off = _spelled(["--no-" + a[2:] for a in self.aliases], shown_off) if shown_off else []
        return shown, shown_off, hidden, hidden_off


def _spelled(aliases: Sequence[str], shown: Sequence[str]) -> list[str]:
    """The aliases and the snake_case spelling of every long flag among ``shown`` and them, less ``shown``."""
    out: list[str] = []
    for s in (*shown, *aliases):
        for variant in (s, "--" + s[2:].replace("-", "_")) if s.startswith("--") else (s,):
            if variant not in shown and variant not in out:
                out.append(variant)
    return out


def _base(kind: Any) -> Any:
    """``int`` of ``Optional[int]`` (or ``int | None``); any other type as it is."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) in (typing.Union, types.UnionType) and args else kind


@dataclass(frozen=True)
class Flags:
    """A command's values, and how the user spelled each option (``names``: the spelling typed, else
    the shown flag), so errors name what the user typed."""

    values: Mapping[str, Any]
    names: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def settings(self, names: Sequence[str], mode: str) -> Given:
        """The answering settings among these flags, checked once, errors naming the flags as typed."""
        return given_options({n: self.values[n] for n in names}, mode, spelled=self.names)


def setting_opts(*names: str) -> list[Opt]:
    """The options of these settings (``squadkit.settings.SETTINGS``): flag, older spellings, meaning,
    default text; None when not given (the resolver decides)."""
    out = []
    for name in names:
        setting = BY_NAME[name]
        flags = (f"{setting.flag}/--no-{setting.flag[2:]}",) if setting.kind is bool else (
            (setting.flag, "-k") if name == "k" else (setting.flag,))
        out.append(Opt(name, f"{setting.meaning} [default: {setting.default_text}]", Optional[setting.kind], None,
                       flags, tuple("--" + a.replace("_", "-") for a in setting.aliases), show_default=False))
    return out


def dataclass_opts(cls: type) -> list[Opt]:
    """One option per field of a settings dataclass: metadata ``flag`` (else ``--`` + the name), short
    ``flags``, ``aliases``, ``help``, ``cli_default``; fields with ``cli: False`` are left out."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kind = hints[f.name]
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        shorts = tuple(o for o in meta.get("flags", ()) if not o.startswith("--"))
        aliases = (*meta.get("aliases", ()), *(o for o in meta.get("flags", ()) if o.startswith("--")))
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = ... if required else meta.get("cli_default", f.default)
        is_bool = _base(kind) is bool
        decls = ((f"{flag}/--no-{flag[2:]}",) if is_bool and not f.name.startswith("no_") else (flag,)) + shorts
        shown = ("on" if default else "off") if is_bool else (not required and default is not None)
        out.append(Opt(f.name, meta["help"], kind, default, decls, tuple(aliases), show_default=shown,
                       hidden=meta.get("hidden", False)))
    return out


class DeclaredCommand(typer.core.TyperCommand):
    """A command whose options carry hidden spellings: parsed natively by click, left out of --help."""

    shown: dict[str, tuple[list[str], list[str]]] = {}  # param name -> (opts, secondary opts) --help shows

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = tuple(args)  # read (never changed) to tell which spelling was typed
        return super().parse_args(ctx, args)

    def format_options(self, ctx: typer.Context, formatter) -> None:
        full = {p.name: (p.opts, p.secondary_opts) for p in self.params if p.name in self.shown}
        for p in self.params:
            if p.name in self.shown:
                p.opts, p.secondary_opts = self.shown[p.name]
        try:
            super().format_options(ctx, formatter)
        finally:
            for p in self.params:
                if p.name in full:
                    p.opts, p.secondary_opts = full[p.name]


def _typed(argv: Sequence[str], spellings: Sequence[str]) -> Optional[str]:
    """The long spelling of an option among ``argv``'s words (``--x value``, ``--x=value``); None for a short
    flag, which errors name by the shown long one."""
    for word in argv:
        if word == "--":
            break
        for s in spellings:
            if s.startswith("--") and (word == s or word.startswith(s + "=")):
                return s
    return None


def _parameter(opt: Opt) -> inspect.Parameter:
    """The typer parameter of ``opt``: every spelling declared (click parses them all); --help shows
    only the shown ones (``DeclaredCommand``)."""
    if opt.argument:
        info = typer.Argument(opt.default, help=opt.help, metavar=opt.metavar, show_default=opt.show_default)
    else:
        shown, shown_off, hidden, hidden_off = opt.spellings()
        on, off = [*shown, *hidden], [*shown_off, *hidden_off]
        if off:  # each off-switch paired with an on-switch ("--x/--no-x"), as click declares them
            decls = [f"{on[i] if i < len(on) else on[0]}/{o}" for i, o in enumerate(off)] + on[len(off):]
        else:
            decls = on
        info = typer.Option(opt.default, *decls, help=opt.help, metavar=opt.metavar, show_default=opt.show_default,
                            hidden=opt.hidden)
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=opt.kind)


def command(app: typer.Typer, name: str, *opts: Opt, **kwargs: Any) -> Callable:
    """Register ``func(flags: Flags)`` as command ``name`` of ``app`` with these options; bad input
    (a SquadkitError) becomes one line and exit code 2."""

    def register(func: Callable) -> Callable:
        def run(squadkit_context: typer.Context, **values: Any) -> Any:
            argv = squadkit_context.meta.get(ARGV_KEY, ())
            names = {}
            for opt in opts:
                typed = None
                source = squadkit_context.get_parameter_source(opt.name)
                if not opt.argument and source is not None and source.name == "COMMANDLINE":
                    typed = _typed(argv, [s for group in opt.spellings() for s in group])
                names[opt.name] = typed or opt.long
            return func(Flags(values, names))

        context = inspect.Parameter("squadkit_context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        run.__signature__ = inspect.Signature([context, *(_parameter(o) for o in opts)])
        run.__doc__ = func.__doc__
        shown = {opt.name: tuple(opt.spellings()[:2]) for opt in opts if not opt.argument}
        cls = type(f"{func.__name__}Command", (DeclaredCommand,), {"shown": shown})
        app.command(name, cls=cls, **kwargs)(friendly_errors(functools.wraps(func)(run)))
        return func

    return register


# ---------------------------------------------------------------------------------------------
# output and errors
# ---------------------------------------------------------------------------------------------


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly_errors(func: Callable) -> Callable:
    """Bad input (a SquadkitError, which names the flag as typed where one is at fault) becomes one
    line and exit code 2; Ctrl-C, "interrupted" and 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SquadkitError as exc:
            fail(first_line(exc))
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def note(text: str) -> None:
    """A note for the user on stderr (stdout stays JSON)."""
    typer.echo(f"note: {text}", err=True)


def print_json(obj: Any, compact: bool = False) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False) if compact else json.dumps(obj, indent=2, ensure_ascii=False))
