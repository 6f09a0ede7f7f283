"""Command line: ``wsgicliquet serve|pipeline|migrate --ini FILE`` (``--ini`` defaults to ``$WSGICLIQUET_INI``)."""
from __future__ import annotations

import argparse
import configparser
import logging
import logging.config
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["main", "settings_from_ini"]


def _config_uri(path: str) -> str:
    return "config:" + os.path.abspath(path)


class CommandError(Exception):
    """A failure explained in one line on standard error; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _check_readable(path: str) -> None:
    if not os.path.isfile(path):
        reason = "a directory, not an ini file" if os.path.isdir(path) else "no such file"
        raise CommandError(f"cannot read {path}: {reason}", status=2)
    try:
        with open(path, encoding="utf-8") as stream:
            stream.read(1)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", status=2) from None


def settings_from_ini(path: str) -> Dict[str, Any]:
    """The settings of the ini: its ``[DEFAULT]`` section, where the settings shared by every filter and app live,
    overridden by those of an ``[app:main]`` section (a resource app configured in its own section)."""
    _check_readable(path)
    parser = configparser.ConfigParser(defaults={"here": os.path.dirname(os.path.abspath(path))})
    try:
        parser.read(path, encoding="utf-8")
        settings = dict(parser.defaults())
        if parser.has_section("app:main"):
            settings.update(parser.items("app:main"))
    except configparser.Error as exc:
        raise CommandError(f"{path} is not a valid ini file: {exc}") from None
    return {key: value for key, value in settings.items() if key not in ("here", "use")}


def _load_app(path: str, name: str = "main") -> Any:
    from paste.deploy import loadapp

    _check_readable(path)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as gunicorn does: ini files name modules of the project they serve
    try:
        return loadapp(_config_uri(path), name=name)
    except configparser.Error as exc:
        raise CommandError(f"{path} is not a valid ini file: {exc}") from None
    except LookupError as exc:  # no [app:main], [pipeline:main]...; an unknown egg:wsgicliquet#name
        raise CommandError(f"{path}: {exc}") from None


def _setup_logging(path: str) -> None:
    _check_readable(path)
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise CommandError(f"{path} is not a valid ini file: {exc}") from None
    if parser.has_section("loggers"):
        try:
            logging.config.fileConfig(path, defaults={"here": os.path.dirname(os.path.abspath(path))},
                                      disable_existing_loggers=False)
        except (KeyError, ValueError, TypeError, AttributeError, ImportError, configparser.Error) as exc:
            raise CommandError(f"{path}: invalid logging sections ([loggers], [handlers], [formatters]): "
                               f"{type(exc).__name__}: {exc}") from None
    else:
        logging.basicConfig(level=logging.INFO, format="%(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    _setup_logging(args.ini)
    app = _load_app(args.ini)
    run_simple(args.host, args.port, app, use_reloader=args.reload, threaded=True)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from wsgicliquet.pipeline import describe

    app = _load_app(args.ini)
    print("\n".join(describe(app)))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from wsgicliquet.backends import load_backend
    from wsgicliquet.settings import load_settings
    from wsgicliquet.storage.exceptions import BackendError

    if args.command == "init":  # Cliquet's former name of the command (PROTOCOL.md §17)
        print("wsgicliquet init is deprecated, use wsgicliquet migrate", file=sys.stderr)
    settings = load_settings(settings_from_ini(args.ini))
    for kind in ("storage", "cache", "permission"):
        backend = load_backend(kind, settings)
        if backend is None:
            continue
        if settings["readonly"] and kind != "cache":
            print(f"{kind}: read-only mode, not migrated", file=sys.stderr)
            continue
        try:
            backend.initialize_schema(dry_run=args.dry_run)
        except BackendError as exc:
            raise CommandError(f"{kind} ({kind}_url): {exc}") from None
        print(f"{kind}: {type(backend).__module__} ready")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from wsgicliquet.settings import PATTERNS, SETTINGS

    print("| setting | default | meaning |")
    print("| --- | --- | --- |")
    for setting in SETTINGS.values():
        default = setting.default
        shown = " ".join(default) if isinstance(default, list) else ("" if default is None else default)
        shown = f"`{shown}`" if shown != "" else "(empty)"
        print(f"| `{setting.name}` | {shown} | {setting.doc} |")
    for pattern, _kind, doc in PATTERNS:
        print(f"| `{pattern.pattern}` | | {doc} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsgicliquet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, aliases=list(aliases))
        sub.add_argument("--ini", default=os.environ.get("WSGICLIQUET_INI"),
                         help="PasteDeploy ini file (default: $WSGICLIQUET_INI)")
        return sub

    serve = add("serve", "serve the ini's main app with Werkzeug's development server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8888)
    serve.add_argument("--reload", action="store_true", help="restart when code changes")
    serve.set_defaults(func=cmd_serve)
    add("pipeline", "print the middleware chain the ini builds, outermost first").set_defaults(func=cmd_pipeline)
    commands.add_parser("settings", help="print every setting with its default (Markdown)").set_defaults(
        func=cmd_settings, ini=None)
    migrate = add("migrate", "create backend tables and indexes (idempotent); init is a deprecated alias",
                  aliases=["init"])
    migrate.add_argument("--dry-run", action="store_true")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run a command; exit status 2 for a usage error (an unknown option, no or an unreadable ``--ini``), 1 when the
    configuration is wrong (an error naming the setting or the section) or the command fails."""
    from wsgicliquet.settings import ConfigurationError

    args = build_parser().parse_args(argv)
    if not args.ini and args.command != "settings":
        print("wsgicliquet: --ini FILE is required (or set WSGICLIQUET_INI)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"wsgicliquet {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except ConfigurationError as exc:
        print(f"wsgicliquet {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
