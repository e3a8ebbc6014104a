"""Run ``lastlayer.serve.server.serve`` in its own process (the browser test and the SIGKILL/SIGTERM tests).

Usage: ``python launch_server.py STATE MODEL PORT [--source S] [--host H] [--token T] [--busy-timeout SECONDS]
[--hold-finetunes] [--header-timeout S] [--body-timeout S] [--max-connections N]`` (a fine-tune then lasts until it is told to stop, or an hour). Prints the
server's lines (the page URL first) on stdout, flushed.
"""

from __future__ import annotations

import argparse
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("state")
    parser.add_argument("model")
    parser.add_argument("port", type=int)
    parser.add_argument("--source")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token")
    parser.add_argument("--busy-timeout", type=float)
    parser.add_argument("--hold-finetunes", action="store_true")
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--body-timeout", type=float, default=15.0)
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args()
    if args.hold_finetunes:
        hold_finetunes()

    from lastlayer.serve.connections import ConnectionLimits
    from lastlayer.serve.server import serve
    from lastlayer.teach.session import TeachingSession

    def log(line: str) -> None:
        print(line, flush=True)

    with TeachingSession(args.state, args.model, busy_timeout=args.busy_timeout) as session:
        serve(session, args.source, host=args.host, port=args.port, token=args.token, log=log,
              limits=ConnectionLimits(header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                                      max_connections=args.max_connections))
    print("server stopped", flush=True)
    sys.exit(0)


def hold_finetunes() -> None:
    from lastlayer.learn.imprinting import ImprintingHead

    original = ImprintingHead.finetune

    def held(head, *args, stop=None, **kwargs):
        print("fine-tuning", flush=True)
        if stop is not None:
            stop.wait(3600)
        return original(head, *args, stop=stop, **kwargs)

    ImprintingHead.finetune = held


if __name__ == "__main__":
    main()
