"""``lastlayer watch``: live classification of a camera, video, stream or image folder."""

from __future__ import annotations

import argparse
import sys

from lastlayer.cli import common

HELP = "classify a camera, video, stream or image folder live; print each change of the top class"
EXAMPLE = "lastlayer watch --model out/model.tflite --source 0 --json"
FLAGS = {"model": "--model", "source": "--source", "state": "--state", "output": "--record", "record_class": "--record-class",
         "normalization": common.NORMALIZATION_FLAGS, "unknown_threshold": "--unknown-threshold", "uncertain": "--record-uncertain"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "watch", help=HELP, epilog=f"examples:\n  {EXAMPLE}\n  lastlayer watch --state parts-state --source rtsp://camera/stream",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a classifier (or a teaching session's state) on every frame of SOURCE: a camera index or device "
        "(0, /dev/video0), a video file, an rtsp:// or http:// stream, or an image folder or glob. Prints the top class "
        "whenever it changes (scores smoothed over --window frames); with --json, one JSON object per change (NDJSON). "
        "A model or state with an unknown rule reports 'unknown' for frames of none of its classes.")
    parser.add_argument("--source", "-s", required=True, help="camera index or device, video file, stream URL, or image folder/glob")
    parser.add_argument("--model", "-m", help="a classifier .tflite (e.g. exported by 'lastlayer teach' or 'imprint')")
    parser.add_argument("--state", help="a teaching session's state folder (instead of --model): opened read-only, and "
                        "followed while other processes teach it")
    parser.add_argument("--top-k", "-k", type=common.positive_int, default=3, help="classes per event (default: 3)")
    parser.add_argument("--window", type=common.positive_int, default=5,
                        help="frames the scores are averaged over, and the unknown answer decided by majority (default: 5)")
    parser.add_argument("--min-score", type=common.finite_float, default=0.0,
                        help="below this smoothed score the top class is reported as none (default: 0)")
    parser.add_argument("--every", type=common.positive_int, default=1, help="classify every N-th frame (default: 1)")
    parser.add_argument("--max-fps", type=common.positive_float, default=None,
                        help="classify at most this many frames per second (of the video's own time for a file or folder: "
                        "a 10 s clip at --max-fps 5 gives 50 frames)")
    parser.add_argument("--max-frames", type=common.positive_int, default=None, help="stop after this many classified frames")
    parser.add_argument("--loop", action="store_true", help="play a video file or image folder in a loop")
    parser.add_argument("--realtime", action="store_true", help="play a video file or folder at its frame rate (default: as fast as possible)")
    parser.add_argument("--record", metavar="DIR", help="save frames whose top class is --record-class into DIR/<class>/")
    parser.add_argument("--record-class", metavar="NAME", help="the class whose frames --record saves")
    parser.add_argument("--record-uncertain", metavar="DIR",
                        help="save the frames the model is unsure about (unknown, or two classes nearly tied) into "
                        "DIR/unknown/ and DIR/tied/, each sight once (repeats of a kept frame are skipped), to teach later")
    common.add_unknown_options(parser)
    common.add_normalization_options(parser)
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.state is None):
        raise common.UsageError("give either --model or --state")
    if (args.record is None) != (args.record_class is None):
        raise common.UsageError("--record and --record-class go together")
    from lastlayer.sources import open_source
    from lastlayer.teach.live import predictions, top_changes
    from lastlayer.teach.recorder import FrameRecorder
    from lastlayer.teach.session import TeachingSession
    from lastlayer.teach.uncertain import UncertainRecorder

    predictor = _predictor(args)
    try:
        if args.record:
            classes = [c.name for c in predictor.classes()] if isinstance(predictor, TeachingSession) else predictor.labels
            recorder = FrameRecorder(args.record, args.record_class, classes)
        else:
            recorder = None
        uncertain = UncertainRecorder(args.record_uncertain) if args.record_uncertain else None
        live = sys.stderr.isatty() and not (args.json or args.quiet)
        states = predictions(predictor, open_source(args.source, loop=args.loop, realtime=args.realtime), window=args.window,
                             top_k=args.top_k, every=args.every, max_fps=args.max_fps, max_frames=args.max_frames)
        last = None

        def observed():
            nonlocal last
            for state in states:
                last = state
                if recorder is not None:
                    recorder.offer(state)
                saved = uncertain.offer(state) if uncertain is not None else None
                if saved is not None and args.json:
                    common.print_json_line({"event": "uncertain", **saved})
                if live:
                    sys.stderr.write(f"\r{state.fps:5.1f} frames/s  frame {state.frame.index}  {state.describe():40}")
                yield state

        for change in top_changes(observed(), args.min_score):
            if args.json:
                common.print_json_line(change.to_dict())
            elif not args.quiet or change.previous is not None:
                top = change.state.top
                shown = change.state.unknown or (top is not None and top[1] >= args.min_score)
                label = change.state.describe() if shown else "(none)"
                print(("\r" if live else "") + f"frame {change.state.frame.index}: {label}", flush=True)
        if args.json:
            common.print_json_line({"event": "end", "frames": last.processed if last else 0, "fps": round(last.fps, 2) if last else 0.0,
                                    "recorded": recorder.saved if recorder else 0,
                                    "uncertain_recorded": uncertain.saved if uncertain else 0})
        elif live:
            sys.stderr.write("\n")
        if uncertain is not None and not args.json and not args.quiet:
            print(f"saved {uncertain.saved} uncertain frame(s) into {args.record_uncertain}")
    finally:
        if isinstance(predictor, TeachingSession):
            predictor.close()
    return 0


def _predictor(args: argparse.Namespace):
    """The model file with its unknown rule (the check is made here: the runtime knows no learning), or the state."""
    feed = {"input_mean": args.input_mean, "input_std": args.input_std}
    unknown = {"enabled": not args.no_unknown, "threshold": args.unknown_threshold}
    if args.state is not None:
        from lastlayer.teach.session import TeachingSession

        return TeachingSession(args.state, read_only=True, unknown=unknown["enabled"], unknown_threshold=unknown["threshold"],
                               **feed)
    from lastlayer.jobs.unknown import unknown_check
    from lastlayer.model.zoo import open_model
    from lastlayer.runtime.predictor import ModelPredictor

    model = open_model(args.model)
    return ModelPredictor(model, check=unknown_check(model, **unknown), **feed)
