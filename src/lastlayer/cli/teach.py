"""``lastlayer teach``: teach from a camera with the keyboard, or from a web page (``--web``); ``--import`` adds a photo set.

In a terminal one thread owns the keyboard (:mod:`lastlayer.cli.terminal`): keys are commands, and naming
or renaming a class opens a prompt on the bottom line in place of the live prediction. Without a terminal
the same commands are read as lines.
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path
from typing import Any

from lastlayer.cli import common

HELP = "teach new classes from a camera: keys in the terminal, or a web page (--web); --import a photo set"
EXAMPLE = "lastlayer teach --source 0 --state parts-state"
FLAGS = {"model": "--model", "source": "--source", "state": "--state", "class": "(class)", "output": "--state",
         "normalization": common.NORMALIZATION_FLAGS, "import": "--import", "data": "--import", "web": "--web",
         "keep_classes": "--keep-classes"}
KEY_TABLE = [
    ("1-9", "add the current frame to class 1-9"),
    ("n", "name a new class (type the name, Enter; Esc cancels)"),
    ("r", "rename a class (its number, then the new name)"),
    ("d", "delete a class and its examples (its number, then y)"),
    ("u", "undo the last example"),
    ("e", "leave-one-out accuracy: right out of how many, with its 95 % interval, and per class"),
    ("s", "export model.tflite + labels.txt"),
    ("p", "print the current prediction"),
    ("l", "list the frames it was unsure about (unknown or nearly tied)"),
    ("t", "teach an unsure frame to a class (its number, then the class: a number or a name, new or not)"),
    ("x", "dismiss an unsure frame (its number)"),
    ("h", "these keys"),
    ("q", "quit (also Ctrl-D)"),
]
KEYS = "keys: " + ", ".join(f"{key} {what.split(' (')[0]}" for key, what in KEY_TABLE)
LINES = ("'1' (add the frame to class 1), 'n NAME', 'r CLASS NEW NAME' (CLASS: its number or name), 'd CLASS', "
         "'u', 'e', 's', 'p', 'l', 't FRAME CLASS' (FRAME: its number in the list), 'x FRAME', 'q'")
FOLDER_FPS = 2.0  # images per second of an image folder in teach: time to press a key for the one on screen


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "teach", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n  {EXAMPLE}\n  lastlayer teach --web --source 0 --state parts-state --host 0.0.0.0\n"
        "  lastlayer teach --state parts-state --import photos/\n\n"
        "keys:\n" + "\n".join(f"  {key:<4} {what}" for key, what in KEY_TABLE),
        description="Show the live prediction for SOURCE and teach the session in --state: every example is stored at "
        "once, so a reboot keeps what was taught. A video file plays at its own rate, an image folder at "
        f"{FOLDER_FPS:g} images per second (--fps to change, --fast for as fast as they decode). Without a terminal, "
        f"commands are read as lines from standard input: {LINES}.")
    parser.add_argument("--source", "-s", help="camera index or device, video file, stream URL, or image folder/glob")
    parser.add_argument("--state", required=True, help="the session's folder (created if missing)")
    parser.add_argument("--model", "-m", help="extractor, classifier or imprinted model for a new state (default: the state's, "
                        f"else {common.DEFAULT_EXTRACTOR})")
    parser.add_argument("--import", dest="import_dir", metavar="DIR",
                        help="add a photo set first: DIR/<class>/<photos> (all or nothing; photos already in the state are skipped)")
    parser.add_argument("--keep-classes", action="store_true",
                        help="keep the classes of the --model classifier: predictions rank them with the new classes, and the "
                        "export keeps them bit for bit (a new state, or one without classes yet)")
    parser.add_argument("--loop", action="store_true", help="play a video file or image folder in a loop")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--fps", type=common.positive_float, default=None,
                      help=f"play a video file or image folder at this many frames per second (default: a video's own rate, "
                      f"{FOLDER_FPS:g} for a folder)")
    pace.add_argument("--fast", action="store_true", help="play a video file or image folder as fast as it decodes")
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
    if not (args.web or args.source is not None or args.import_dir is not None):
        raise common.UsageError("teaching from the terminal needs --source (or --web to use a browser, or --import DIR)")
    from lastlayer.sources.files import playback_options
    from lastlayer.teach.session import TeachingSession

    # Every input is checked before the state folder is created: the web extra, the token file, the photo set, the source.
    token = None
    if args.web:
        from lastlayer.serve import require_web

        require_web()
        token = _token(args)
    photos = None
    if args.import_dir is not None:
        from lastlayer.teach.importer import scan_photos

        photos = scan_photos(args.import_dir)
    pace = playback_options(args.source, fps=args.fps, fast=args.fast, folder_fps=FOLDER_FPS) if args.source is not None else {}
    source = None
    if args.source is not None:
        from lastlayer.sources import open_source

        source = open_source(args.source, loop=args.loop, latest=True, **pace)
        if args.web:  # the page's feed opens it again (and again after a failure)
            source.close()
            source = None
    try:
        session = TeachingSession(args.state, args.model, input_mean=args.input_mean, input_std=args.input_std,
                                  keep_classes=args.keep_classes or None)
    except BaseException:
        if source is not None:
            source.close()
        raise
    try:
        if photos is not None:
            from lastlayer.teach.importer import import_photos

            imported = import_photos(session, photos, progress=common.show_progress(args), log=common.job_log(args))
            if args.web or source is not None:
                _say(args, imported.to_text(), event="import", **imported.to_dict())
            else:
                common.render(args, imported)
        if args.web:
            from lastlayer.serve.server import serve

            serve(session, args.source, host=args.host, port=args.port, token=token, playback=pace,
                  token_file=str(Path(args.state) / "web-token"))
        elif source is not None:
            return _terminal(session, source, args)
        return 0
    finally:
        if source is not None:
            source.close()
        session.close()


def _counted(number: int, noun: str) -> str:
    """``1 class``, ``2 classes``, ``1 example``, ``0 examples``."""
    return f"{number} {noun}{'' if number == 1 else 'es' if noun.endswith('s') else 's'}"


def _token(args: argparse.Namespace) -> str | None:
    """The access token: ``--token-file``, ``--token``, or ``$LASTLAYER_TOKEN`` (None: the server picks)."""
    from lastlayer.serve.security import TOKEN_ENV, read_token_file

    if args.token_file is not None:
        return read_token_file(args.token_file)
    if args.token is not None:
        return args.token
    return os.environ.get(TOKEN_ENV) or None


def _say(args: argparse.Namespace, text: str, screen: Any = None, **data: Any) -> None:
    if args.json:
        common.print_json_line({"message": text, **data})
    elif screen is not None:
        screen.say(text)
    elif not args.quiet:
        print(text, flush=True)


def _terminal(session: Any, source: Any, args: argparse.Namespace) -> int:
    from lastlayer.cli.terminal import END_OF_INPUT, Keys, Screen
    from lastlayer.errors import LastLayerError, StorageError
    from lastlayer.teach.live import TEACHING_MAX_FPS, LiveLoop

    screen = Screen()
    keys = Keys(interactive=screen.interactive and not args.json)  # keys and prompts only where the prompt is seen
    screen.interactive = keys.interactive
    teacher = _Teacher(session, keys, screen, args)
    loop = LiveLoop(session, source, window=3, max_fps=TEACHING_MAX_FPS).start()
    teacher.loop = loop
    stop = threading.Event()
    status = threading.Thread(target=_show_predictions, args=(loop, args, screen, stop), name="lastlayer-status", daemon=True)
    try:
        with keys, screen.warnings_shown():
            teacher.say(KEYS if keys.interactive else f"commands, one per line: {LINES}")
            teacher.say(teacher.class_list())
            status.start()
            ended = False
            while True:
                command = keys.get(timeout=0.5)
                if command is None:
                    if not loop.running and loop.error is not None:
                        raise loop.error
                    if not loop.running and not ended:
                        ended = True
                        latest = loop.latest()
                        teacher.say(f"the source ended{f' at frame {latest.frame.index}' if latest else ''}; the keys still work on "
                                    "its last frame (--loop plays it again)", event="ended")
                    continue
                if command in ("q", END_OF_INPUT) or (not keys.interactive and command.strip() == "q"):
                    break
                try:
                    teacher.command(command)
                except StorageError:  # nothing more can be stored: stop (exit 1) rather than refuse every key
                    raise
                except LastLayerError as exc:  # e.g. a name taken, the state busy: said, and teaching goes on
                    teacher.say(f"error: {exc}", error=str(exc))
    finally:
        stop.set()
        loop.stop()
        screen.end()
    classes = session.classes()
    _say(args, f"{_counted(len(classes), 'class')}, {_counted(sum(c.examples for c in classes), 'example')} kept in {args.state}",
         event="end")
    return 0


def _show_predictions(loop: Any, args: argparse.Namespace, screen: Any, stop: threading.Event) -> None:
    """The live prediction: the status line on a terminal, else one line (or JSON object) per change of the top class."""
    processed, shown = 0, object()
    while not stop.is_set():
        state = loop.wait_newer(processed, timeout=0.5)
        if state is None:
            continue
        processed = state.processed
        top = state.top
        label = state.describe() if top else "nothing taught yet"  # (unknown: "unknown (closest: gear 0.41)")
        if screen.interactive:
            screen.status(f"frame {state.frame.index}  {state.fps:4.1f} frames/s  {label}")
        elif (top[0] if top else None) != shown:
            shown = top[0] if top else None
            _say(args, f"prediction: {label}", event="prediction", **state.to_dict())


class _Teacher:
    """The commands of the terminal: a key (with prompts for what it needs) or a line with its arguments."""

    def __init__(self, session: Any, keys: Any, screen: Any, args: argparse.Namespace) -> None:
        self.session, self.keys, self.screen, self.args = session, keys, screen, args
        self.export_dir = Path(args.export) if args.export else Path(args.state) / "export"
        self.loop: Any = None

    def say(self, text: str, **data: Any) -> None:
        _say(self.args, text, self.screen if self.screen.interactive else None, **data)

    def class_list(self) -> str:
        return "classes: " + (", ".join(f"{i + 1} {c.name} ({c.examples})" for i, c in enumerate(self.session.classes())) or "none yet")

    def ask(self, label: str, initial: str = "") -> str | None:
        from lastlayer.cli.terminal import ask

        return ask(self.keys, self.screen, label, initial)  # None: cancelled (the prompt's line says so)

    def command(self, command: str) -> None:
        verb, _, rest = command.strip().partition(" ") if not self.keys.interactive else (command, "", "")
        rest = rest.strip()
        if len(verb) == 1 and verb in "123456789":
            self.add_frame(int(verb))
        elif verb == "n":
            name = rest if not self.keys.interactive else self.ask("name of the new class: ")
            if not self.keys.interactive and not name:
                self.say("name the class on the same line: n NAME")
            elif name is not None:
                klass = self.session.add_class(name)
                self.say(f"class {len(self.session.classes())}: {klass.name}", event="class", class_name=klass.name)
        elif verb == "r":
            self.rename(rest)
        elif verb == "d":
            self.delete(rest)
        elif verb == "u":
            undone = self.session.undo()
            self.say("nothing to undo" if undone is None else f"removed example {undone.id}", event="undo")
        elif verb == "e":
            evaluation = self.session.evaluate()
            counts = evaluation.per_class_right  # on how many examples each figure was counted, not a bare ratio
            per_class = ", ".join(f"{k} {'-' if counts.get(k) is None else f'{counts[k].hits}/{counts[k].total}'}"
                                  for k in evaluation.per_class)
            self.say(evaluation.summary() + (f"; per class: {per_class}" if per_class and evaluation.right else ""),
                     event="evaluation", **evaluation.to_dict())
        elif verb == "s":
            model_path, labels_path = self.session.export(self.export_dir)
            self.say(f"wrote {model_path} and {labels_path}", event="export", model=str(model_path))
        elif verb == "p":
            state = self.loop.latest()
            top = state.top if state else None
            self.say("prediction: " + (state.describe() if top else "none"), event="prediction",
                     **({} if state is None else state.to_dict()))
        elif verb == "l":
            self.list_unsure()
        elif verb == "t":
            self.teach_unsure(rest)
        elif verb == "x":
            self.dismiss_unsure(rest)
        elif verb in ("h", "?"):
            self.say(KEYS if self.keys.interactive else f"commands, one per line: {LINES}")
            self.say(self.class_list())
        elif self.keys.interactive and len(command) > 1:
            pass  # an arrow or function key: no command
        else:
            self.say(f"unknown command {command!r}; {KEYS if self.keys.interactive else 'commands, one per line: ' + LINES}")

    def add_frame(self, number: int) -> None:
        classes = self.session.classes()
        if number > len(classes):
            self.say(f"there is no class {number}; press n to name a new class")
            return
        state = self.loop.latest() or self.loop.wait_newer(0, timeout=10)
        if state is None:
            self.say("no frame from the source yet")
            return
        # the frame's embedding comes with its prediction: the frame is not embedded again
        added = self.session.add_examples(classes[number - 1].id, state.frame, embeddings=[state.prediction.embedding])
        klass = self.session.class_info(classes[number - 1].id)
        self.say(f"added frame {state.frame.index} to {klass.name} ({_counted(klass.examples, 'example')})",
                 event="added", example=added[0].id, class_name=klass.name, examples=klass.examples)

    def _chosen(self, text: str | None) -> Any:
        """The class a number or a name chose (None, said, when there is none)."""
        if text is None:
            return None
        text = text.strip()
        found = self._numbered(text) or next((c for c in self.session.classes() if c.name == text), None)
        if found is None:
            self.say(f"there is no class {text!r}; " + self.class_list())
        return found

    def _numbered(self, text: str) -> Any:
        """The class numbered ``text`` as in the class list (1, 2, ...), or None."""
        classes = self.session.classes()
        return classes[int(text) - 1] if text.isdigit() and 1 <= int(text) <= len(classes) else None

    def rename(self, rest: str) -> None:
        if self.keys.interactive:
            klass = self._chosen(self._which("rename"))
            name = self.ask(f"new name for {klass.name}: ", klass.name) if klass is not None else None
        else:
            number, _, name = rest.partition(" ")
            klass = self._chosen(number) if name.strip() else None
            if not name.strip():
                self.say("give the class and its new name on the same line: r CLASS NEW NAME")
        if klass is not None and name is not None:
            renamed = self.session.rename_class(klass.id, name)
            self.say(f"renamed {klass.name} to {renamed.name}", event="renamed", class_name=renamed.name, previous=klass.name)

    def delete(self, rest: str) -> None:
        from lastlayer.cli.terminal import confirm

        klass = self._chosen(self._which("delete") if self.keys.interactive else rest)
        if klass is None:
            return
        if self.keys.interactive and not confirm(self.keys, self.screen, f"delete {klass.name} and its {klass.examples} examples?"):
            self.say("kept " + klass.name)
            return
        self.session.remove_class(klass.id)
        self.say(f"deleted {klass.name} and its {klass.examples} examples", event="deleted", class_name=klass.name)

    def list_unsure(self) -> None:
        frames = self.session.uncertain_frames()
        listed = "; ".join(f"{f.id} {f.describe()} (frame {f.frame}, seen {f.seen}x)" for f in frames)
        self.say(f"unsure frames: {listed}; t teaches one to a class, x dismisses one" if frames else "no unsure frames yet",
                 event="uncertain", frames=[f.to_dict() for f in frames])

    def _unsure(self, text: str | None) -> Any:
        """The unsure frame numbered ``text`` (None, said, when there is none)."""
        if text is None:
            return None
        frames = {str(f.id): f for f in self.session.uncertain_frames()}
        found = frames.get(text.strip())
        if found is None:
            self.say(f"there is no unsure frame {text.strip()!r}; " + ("l lists them" if frames else "none is kept yet"))
        return found

    def _which_unsure(self, verb: str) -> str | None:
        frames = self.session.uncertain_frames()
        if not frames:
            self.say(f"no unsure frame to {verb} yet")
            return None
        self.list_unsure()
        return str(frames[0].id) if len(frames) == 1 else self.ask(f"{verb} which unsure frame (its number)? ")

    def teach_unsure(self, rest: str) -> None:
        if self.keys.interactive:
            frame = self._unsure(self._which_unsure("teach"))
            where = self.ask(f"teach unsure frame {frame.id} to which class (number or name)? ") if frame is not None else None
        else:
            number, _, where = rest.partition(" ")
            frame = self._unsure(number) if where.strip() else None
            if not where.strip():
                self.say("give the unsure frame and the class on the same line: t FRAME CLASS")
        if frame is None or where is None or not where.strip():
            return
        numbered = self._numbered(where.strip())
        added = self.session.teach_uncertain(frame.id, numbered.id if numbered is not None else where.strip())
        klass = self.session.class_info(added[0].class_id)
        self.say(f"taught unsure frame {frame.id} to {klass.name} ({_counted(klass.examples, 'example')})",
                 event="added", example=added[0].id, class_name=klass.name, examples=klass.examples)

    def dismiss_unsure(self, rest: str) -> None:
        frame = self._unsure(self._which_unsure("dismiss") if self.keys.interactive else rest)
        if frame is not None:
            self.session.dismiss_uncertain(frame.id)
            self.say(f"dismissed unsure frame {frame.id}", event="dismissed", frame=frame.id)

    def _which(self, verb: str) -> str | None:
        classes = self.session.classes()
        if not classes:
            self.say(f"no class to {verb} yet; press n to name one")
            return None
        return classes[0].name if len(classes) == 1 else self.ask(f"{verb} which class (1-{len(classes)} or its name)? ")
