"""``lastlayer teach``: teach from a camera with the keyboard (1-9 add, n new class, u undo, s export, q quit), or ``--web``."""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from lastlayer.cli import common

HELP = "teach new classes from a camera: keys in the terminal, or a web page (--web)"
EXAMPLE = "lastlayer teach --source 0 --state parts-state"
FLAGS = {"model": "--model", "source": "--source", "state": "--state", "class": "(class)", "output": "--state",
         "normalization": common.NORMALIZATION_FLAGS}
KEYS = "keys: 1-9 add the current frame to class 1-9, n name a new class, u undo, e evaluate, s export, q quit"


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "teach", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n  {EXAMPLE}\n  lastlayer teach --web --source 0 --state parts-state --host 0.0.0.0\n\n{KEYS}",
        description="Show the live prediction for SOURCE and teach the session in --state: every example is stored at "
        "once, so a reboot keeps what was taught. Without a terminal, commands are read as lines from standard input "
        "('1', 'n gear', 'u', 's', 'q').")
    parser.add_argument("--source", "-s", help="camera index or device, video file, stream URL, or image folder/glob")
    parser.add_argument("--state", required=True, help="the session's folder (created if missing)")
    parser.add_argument("--model", "-m", help="extractor, classifier or imprinted model for a new state (default: the state's, "
                        f"else {common.DEFAULT_EXTRACTOR})")
    parser.add_argument("--loop", action="store_true", help="play a video file or image folder in a loop")
    parser.add_argument("--export", metavar="DIR", help="where 's' writes model.tflite and labels.txt (default: STATE/export)")
    parser.add_argument("--web", action="store_true", help="serve the teaching page instead of reading keys")
    parser.add_argument("--host", default="127.0.0.1", help="with --web: address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=common.positive_int, default=8765, help="with --web: port (default: 8765)")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--token", help="with --web: access token (default: $LASTLAYER_TOKEN, else a random one when listening "
                        "beyond this machine, kept in STATE/web-token); other users see it in ps: prefer --token-file")
    tokens.add_argument("--token-file", metavar="FILE", help="with --web: read the access token from FILE's first line "
                        "(FILE must be readable by you only: chmod 600)")
    common.add_normalization_options(parser)
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.teach.session import TeachingSession

    token = _token(args) if args.web else None  # (a bad token file is refused before the state is touched)
    session = TeachingSession(args.state, args.model, input_mean=args.input_mean, input_std=args.input_std)
    try:
        if args.web:
            from lastlayer.serve.server import serve

            serve(session, args.source, host=args.host, port=args.port, token=token,
                  token_file=str(Path(args.state) / "web-token"))
            return 0
        if args.source is None:
            raise common.UsageError("teaching from the terminal needs --source (or use --web to upload photos)")
        return _terminal(session, args)
    finally:
        session.close()


def _token(args: argparse.Namespace) -> str | None:
    """The access token: ``--token-file``, ``--token``, or ``$LASTLAYER_TOKEN`` (None: the server picks)."""
    from lastlayer.serve.security import TOKEN_ENV, read_token_file

    if args.token_file is not None:
        return read_token_file(args.token_file)
    if args.token is not None:
        return args.token
    return os.environ.get(TOKEN_ENV) or None


@contextlib.contextmanager
def _keys() -> Iterator[queue.Queue]:
    """Commands from stdin: single key presses on a terminal, lines otherwise."""
    commands: queue.Queue = queue.Queue()
    raw = sys.stdin.isatty()
    saved = None
    if raw:
        import termios
        import tty

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setcbreak(sys.stdin.fileno())

    def read() -> None:
        try:
            while True:
                text = os.read(sys.stdin.fileno(), 1).decode(errors="replace") if raw else sys.stdin.readline()
                if not text:
                    commands.put("q")
                    return
                if text.strip():
                    commands.put(text.strip())
        except (OSError, ValueError):
            commands.put("q")

    threading.Thread(target=read, name="lastlayer-keys", daemon=True).start()
    try:
        yield commands
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _say(args: argparse.Namespace, text: str, **data: Any) -> None:
    if args.json:
        common.print_json_line({"message": text, **data})
    elif not args.quiet:
        print(text, flush=True)


def _terminal(session: Any, args: argparse.Namespace) -> int:
    from lastlayer.errors import LastLayerError, StorageError
    from lastlayer.sources import open_source
    from lastlayer.teach.live import TEACHING_MAX_FPS, LiveLoop

    loop = LiveLoop(session, open_source(args.source, loop=args.loop, latest=True), window=3, max_fps=TEACHING_MAX_FPS).start()
    export_dir = Path(args.export) if args.export else Path(args.state) / "export"
    stop = threading.Event()
    threading.Thread(target=_show_predictions, args=(loop, args, stop), name="lastlayer-status", daemon=True).start()
    _say(args, KEYS)
    _say(args, "classes: " + (", ".join(f"{i + 1} {c.name} ({c.examples})" for i, c in enumerate(session.classes())) or "none yet"))
    try:
        with _keys() as commands:
            while True:
                try:
                    command = commands.get(timeout=0.5)
                except queue.Empty:
                    command = None
                if command is None:
                    if not loop.running and loop.error is not None:
                        raise loop.error
                    continue
                if command == "q":
                    break
                try:
                    _command(session, loop, command, args, export_dir)
                except StorageError:  # nothing more can be stored: stop (exit 1) rather than refuse every key
                    raise
                except LastLayerError as exc:  # e.g. a name taken, the state busy: said, and teaching goes on
                    _say(args, f"error: {exc}", error=str(exc))
    finally:
        stop.set()
        loop.stop()
    return 0


def _show_predictions(loop: Any, args: argparse.Namespace, stop: threading.Event) -> None:
    """The live prediction: a status line on a terminal, else one line (or JSON object) per change of the top class."""
    tty = sys.stdout.isatty() and not args.json
    processed, shown = 0, object()
    while not stop.is_set():
        state = loop.wait_newer(processed, timeout=0.5)
        if state is None:
            continue
        processed = state.processed
        top = state.top
        label = f"{top[0]} {top[1]:.2f}" if top else "nothing taught yet"
        if tty and not args.quiet:
            sys.stdout.write(f"\r{state.fps:5.1f} frames/s  {label:40}")
            sys.stdout.flush()
        elif (top[0] if top else None) != shown:
            shown = top[0] if top else None
            _say(args, f"prediction: {label}", event="prediction", **state.to_dict())


def _command(session: Any, loop: Any, command: str, args: argparse.Namespace, export_dir: Path) -> None:
    if command[0] in "123456789":
        classes = session.classes()
        number = int(command[0])
        if number > len(classes):
            _say(args, f"there is no class {number}; press n to name a new class")
            return
        state = loop.latest() or loop.wait_newer(0, timeout=10)
        if state is None:
            _say(args, "no frame from the source yet")
            return
        # the frame's embedding comes with its prediction: the frame is not embedded again
        added = session.add_examples(classes[number - 1].id, state.frame, embeddings=[state.prediction.embedding])
        klass = session.class_info(classes[number - 1].id)
        _say(args, f"added frame {state.frame.index} to {klass.name} ({klass.examples} examples)",
             event="added", example=added[0].id, class_name=klass.name, examples=klass.examples)
    elif command[0] == "n":
        name = command[1:].strip()
        if not name:
            if not sys.stdin.isatty():
                _say(args, "name the class on the same line: n NAME")
                return
            name = input("\nname of the new class: ").strip()
        klass = session.add_class(name)
        _say(args, f"class {len(session.classes())}: {klass.name}", event="class", class_name=klass.name)
    elif command == "u":
        undone = session.undo()
        _say(args, "nothing to undo" if undone is None else f"removed example {undone.id}", event="undo")
    elif command == "e":
        evaluation = session.evaluate()
        _say(args, "leave-one-out accuracy: " + ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in evaluation.per_class.items()),
             event="evaluation", **evaluation.to_dict())
    elif command == "s":
        model_path, labels_path = session.export(export_dir)
        _say(args, f"wrote {model_path} and {labels_path}", event="export", model=str(model_path))
    elif command == "p":
        state = loop.latest()
        top = state.top if state else None
        _say(args, "prediction: " + (f"{top[0]} {top[1]:.2f}" if top else "none"), event="prediction",
             **({} if state is None else state.to_dict()))
    else:
        _say(args, f"unknown command {command!r}; {KEYS}")
