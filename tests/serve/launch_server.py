"""Run ``lastlayer.serve.server.serve`` in its own process (the browser test and the SIGKILL/SIGTERM tests).

Usage: ``python launch_server.py STATE MODEL PORT [--source S] [--host H] [--token T] [--busy-timeout SECONDS]``. Prints the
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
    args = parser.parse_args()

    from lastlayer.serve.server import serve
    from lastlayer.teach.session import TeachingSession

    def log(line: str) -> None:
        print(line, flush=True)

    with TeachingSession(args.state, args.model, busy_timeout=args.busy_timeout) as session:
        serve(session, args.source, host=args.host, port=args.port, token=args.token, log=log)
    print("server stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
