"""Run the teaching page: open the source, pick the access token, serve with uvicorn until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Any, Callable, Iterator

from lastlayer.errors import LastLayerError
from lastlayer.serve import require_web
from lastlayer.serve.connections import ConnectionLimits, bounded_protocol
from lastlayer.serve.security import is_loopback, new_token, write_token_file
from lastlayer.sources.base import redact
from lastlayer.teach.live import TEACHING_MAX_FPS, LiveLoop, Predictor
from lastlayer.teach.session import TeachingSession

LIVE_WINDOW = 3  # frames of smoothing: short, so a new example shows within a few frames
MAX_FPS = TEACHING_MAX_FPS  # predictions per second on the device (leaves CPU for teaching requests)


def source_opener(spec: str, *, top_k: int = 3, max_fps: float = MAX_FPS, stall_timeout: float = 5.0,
                  playback: dict[str, Any] | None = None) -> Callable[[Predictor], LiveLoop]:
    """``open(predictor) -> LiveLoop`` for a source spec: recorded files and folders loop in real time (``loop`` and
    ``realtime`` apply to recorded sources only; ``playback``: other ``fps`` / ``realtime`` for them, see
    :func:`lastlayer.sources.files.playback_options`), live ones hand out the newest frame."""
    from lastlayer.sources import open_source

    pace = {"realtime": True, **(playback or {})}

    def open_loop(predictor: Predictor) -> LiveLoop:
        source = open_source(spec, loop=True, latest=True, stall_timeout=stall_timeout, **pace)
        return LiveLoop(predictor, source, window=LIVE_WINDOW, top_k=top_k, max_fps=max_fps)

    return open_loop


def page_urls(host: str, port: int, token: str | None) -> list[str]:
    """The URLs to print: ready to open, with the token when there is one."""
    query = f"/?token={token}" if token else "/"
    if host in ("0.0.0.0", "::", ""):
        names = [socket.gethostname(), _lan_address(), "127.0.0.1"]
    else:
        names = [host]
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return [f"http://{f'[{name}]' if ':' in name else name}:{port}{query}" for name in seen]


def _lan_address() -> str:
    """This machine's address on the network with the default route (no packet is sent), or ''."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))
        return str(probe.getsockname()[0])
    return ""


def serve(session: TeachingSession, source: str | None = None, *, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None, log: Callable[[str], None] = print, max_upload_bytes: int = 10 * 2**20,
          playback: dict[str, Any] | None = None, limits: ConnectionLimits | None = None,
          token_file: str | None = None) -> None:
    """Serve the teaching page for ``session`` on ``host:port``; blocks until Ctrl-C or SIGTERM.

    Args:
        session: the session to teach (not closed here).
        source: the device's camera/video/stream/folder spec, or ``None`` (the page teaches from
            uploads and the browser's own camera).
        host: the address to listen on; anything but loopback requires an access token.
        port: the TCP port.
        token: the access token; default: none on loopback, a random one otherwise (printed in the URL, and
            written to ``token_file`` when given, readable by its owner only).
        log: where the URLs and the source's errors are reported.
        max_upload_bytes: the largest upload request.
        playback: how a video file or image folder is played (``fps``, ``realtime``; default: in real time at its own rate).
        limits: header and body timeouts and the connection cap (:mod:`lastlayer.serve.connections`).
        token_file: where a random token is kept (mode 0600), so scripts can read it instead of the URL.
    """
    require_web()
    import uvicorn

    from lastlayer.serve.app import create_app

    if token is not None and not token.strip():
        raise LastLayerError("the access token must not be empty; omit it to get a random one", subject="token")
    if token is None and not is_loopback(host):
        token = new_token()
        if token_file is not None:
            write_token_file(token_file, token)
            log(f"access token written to {token_file} (readable by you only)")
    app = create_app(session, None, token=token, source=None if source is None else source_opener(source, playback=playback),
                     source_name=source, max_upload_bytes=max_upload_bytes, log=log)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2, server_header=False,
                            http=bounded_protocol(limits or ConnectionLimits()))
    server = _quiet_server(config)
    urls = page_urls(host, port, token)
    log(f"teaching page: {urls[0]}")
    for url in urls[1:]:
        log(f"           or: {url}")
    if token is None:
        log("no access token: only this machine can open the page (use --host 0.0.0.0 to teach from a phone; a token is then required)")
    else:
        log("the token in the URL is required by every request; share the URL only with people who may teach this device")
    log(f"source: {redact(source)}" if source is not None else "no --source: teach from uploaded photos or the browser's camera")
    log("press Ctrl-C to stop")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit:  # uvicorn exits when it cannot bind
        raise LastLayerError(f"cannot listen on {host}:{port} (in use, or not an address of this machine); pick another port or host",
                             subject="port") from None
    finally:
        app.state.feed.stop()


def _quiet_server(config: Any) -> Any:
    """A uvicorn server whose :meth:`run` returns on Ctrl-C / SIGTERM instead of re-raising the signal."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's server, but Ctrl-C / SIGTERM make :meth:`run` return instead of re-raising the signal."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = [signal.SIGINT, signal.SIGTERM]
            saved = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in saved.items():
                    signal.signal(sig, handler)

    return QuietServer(config)
