"""A flow's command line, derived from its signature and docstring, so a parameter is declared once.

Each parameter becomes `--name-with-dashes`, its help the docstring's `Args:` line (Prefect's own
parser of it, as the UI's form uses). By type:

- bool defaulting to True: `--no-x` turns it off; defaulting to False: `--x` turns it on;
- `Literal[...]` (an environment name, say): `choices`;
- `list[str]`: any number of values (`--select a b`);
- a mapping, or a list of anything else: one YAML (or JSON) value, parsed here;
- a positive int (`PositiveInt`, `Field(ge=1)`): refused here unless it is one;
- a parameter without a default is required.

The flow still validates every value itself: the CLI only turns text into the parameter's type.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import typing
from enum import Enum
from typing import Any, Callable, Literal, Optional, Union, get_args, get_origin

import yaml

_ANNOTATED = typing.Annotated


def _unwrapped(annotation: Any) -> tuple[Any, list]:
    """The type behind Optional[...] and Annotated[...], with the Annotated metadata."""
    metadata: list = []
    while True:
        if get_origin(annotation) is _ANNOTATED:
            annotation, *extra = get_args(annotation)
            metadata += extra
        elif get_origin(annotation) is Union and type(None) in get_args(annotation):
            (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
        else:
            return annotation, metadata


def _positive_int(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = 0
        if number < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return number
    return parse


def _is_positive(metadata: list) -> bool:
    """PositiveInt's `Gt(0)`, or a Field's `ge=1`/`gt=0`, in Annotated metadata (pydantic's FieldInfo included)."""
    for item in metadata:
        for constraint in [item, *getattr(item, "metadata", [])]:
            if getattr(constraint, "gt", None) == 0 or getattr(constraint, "ge", None) == 1:
                return True
    return False


def _yaml_value(flag: str, expected: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise argparse.ArgumentTypeError(f"{flag} is not valid YAML/JSON: {error}") from None
        if value is None:
            return expected()
        if not isinstance(value, expected):
            raise argparse.ArgumentTypeError(
                f"{flag} must be a {'mapping' if expected is dict else 'list'}, got {type(value).__name__}: {text!r}")
        return value
    return parse


def flow_parser(flow: Any, prog: str, aliases: Optional[dict[str, str]] = None,
                description: Optional[str] = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per parameter of `flow` (a Prefect flow or a plain function).

    `aliases`: a parameter's older flag stem, kept working next to the derived one
    (`{"run_snapshots": "snapshots"}` keeps `--no-snapshots` beside `--no-run-snapshots`)."""
    from prefect.utilities.callables import parameter_docstrings

    function = getattr(flow, "fn", flow)
    docs = parameter_docstrings(function.__doc__)
    hints = typing.get_type_hints(function, include_extras=True)
    parser = argparse.ArgumentParser(prog=prog, description=description or (function.__doc__ or "").splitlines()[0])
    for name, parameter in inspect.signature(function).parameters.items():
        kind, metadata = _unwrapped(hints.get(name, str))
        stems = [name, *([aliases[name]] if aliases and name in aliases else [])]
        required = parameter.default is inspect.Parameter.empty
        default = None if required else parameter.default
        help_text = docs.get(name, "").replace("%", "%%")  # argparse formats help with %
        options: dict[str, Any] = {"dest": name, "default": default, "help": help_text}
        if kind is bool:
            prefix = "--no-" if default else "--"
            options.update(action="store_false" if default else "store_true",
                           help=f"turn off: {help_text}" if default else help_text)
        else:
            prefix = "--"
            options["required"] = required
            flag = "--" + name.replace("_", "-")
            if get_origin(kind) is Literal:
                options["choices"] = list(get_args(kind))
            elif isinstance(kind, type) and issubclass(kind, Enum):
                options.update(choices=[member.value for member in kind])
            elif kind is int:
                options.update(type=_positive_int(flag) if _is_positive(metadata) else int, metavar="N")
            elif get_origin(kind) is list and get_args(kind) in {(str,), ()}:
                options.update(nargs="*", default=list(default or []))
            elif get_origin(kind) in {list, dict} or kind in {list, dict}:
                expected = dict if dict in {get_origin(kind), kind} else list
                options.update(type=_yaml_value(flag, expected), metavar="YAML")
        flags = [prefix + stem.replace("_", "-") for stem in stems]
        parser.add_argument(*flags, **options)
    return parser


def run_from_shell(flow: Any, parameters: dict[str, Any], name: str) -> int:
    """Run the flow, print its final state in one line, and give the shell's exit code (0: Completed)."""
    try:
        state = flow(**parameters, return_state=True)
    except Exception as error:  # the engine could not record the run's state: the Prefect API is unreachable
        print(f"{name}: its final state could not be recorded in the Prefect API "
              f"({type(error).__name__}: {error}); the run's own log above says how far it got", file=sys.stderr)
        return 1
    print(f"{name}: {state.name}" + (f": {state.message}" if state.message else ""))
    return 0 if state.is_completed() else 1
