"""The server's life: uvicorn on its own thread and event loop, bound to 127.0.0.1, stopped with its client.

Why a thread of its own: the runtime loop (runtime/loop_thread.py) must stay free for turns, and the kernel's
own loop belongs to ipykernel. Requests are handled on the server loop and reach the runtime through the
client's async API (``run_async`` awaits runtime work from any loop), so HTTP adds no second path into the
runtime. The listening socket is made here, bound to 127.0.0.1 only (no option for another address: the token
is the only credential, and a tool's source runs in the kernel), then handed to uvicorn.

The token (``secrets.token_urlsafe(32)`` unless given) lives in this process's memory only: on the handle for
its owner to read, never in the store, a log line, an error or the handle's repr. ``handle.stop()``,
``%letta serve --stop``, ``client.close()`` and kernel shutdown (which closes the client) stop the server;
stopping waits until the port is closed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import socket
import threading
from typing import TYPE_CHECKING, Any

from letta_nb.errors import InvalidArgumentError, OptionalDependencyError, RuntimeClosedError

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ["HOST", "ServeHandle", "start"]

HOST = "127.0.0.1"
_GRACE_S = 3  # how long stop() lets open responses (a stream) finish before uvicorn cancels them


class ServeHandle:
    """A running server: ``url`` (``http://127.0.0.1:PORT``), ``token`` (the bearer token), ``stop()``."""

    def __init__(self, server: Any, thread: threading.Thread, sock: socket.socket, token: str,
                 owner: list[ServeHandle]):
        self._server, self._thread, self._owner = server, thread, owner
        self.host, self.port = sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.token = token

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving (idempotent): open requests get a few seconds, then the port is closed."""
        self._server.should_exit = True
        if threading.current_thread() is not self._thread:  # from a request of its own: it ends when that returns
            self._thread.join()
        if self in self._owner:
            self._owner.remove(self)

    def __enter__(self) -> ServeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the token
        return f"<letta_nb.ServeHandle {self.url} {'running' if self.running else 'stopped'}>"


def _require_extra() -> Any:
    try:
        import starlette  # noqa: F401
        import uvicorn
        if importlib.util.find_spec("python_multipart") is None:  # the Agent File upload's form parser
            raise ModuleNotFoundError("No module named 'python_multipart'", name="python-multipart")
    except ImportError as e:
        raise OptionalDependencyError(
            f"serving Letta's REST API needs starlette, uvicorn and python-multipart ({e.name} is not installed). "
            "Run: pip install 'letta-nb[serve]'") from e
    return uvicorn


def _listen(port: Any) -> socket.socket:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an integer from 0 to 65535 (0: any free port), got {port!r}.")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY from the listener on Linux. Without it uvicorn's two writes (headers,
    # body) meet the client's delayed ACK: measured 44-48 ms a request on a kept-alive connection, 1.4 ms with it.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        raise InvalidArgumentError(f"port {port} cannot be used on {HOST} ({e.strerror}); pick another, or "
                                   "port=0 for any free one.") from None
    return sock


def _token(token: Any) -> str:
    if token is None:
        return secrets.token_urlsafe(32)
    if not isinstance(token, str) or len(token) < 16 or not token.isascii() or any(c.isspace() for c in token):
        # the value itself is never echoed: it is a secret even when it is a bad one
        raise InvalidArgumentError("token must be a string of at least 16 printable ASCII characters without "
                                   "spaces, or None for a random one.")
    return token


def start(client: Client, port: int = 0, token: str | None = None) -> ServeHandle:
    """Serve ``client``'s agents over Letta's REST API on 127.0.0.1 (``client.serve`` documents it)."""
    uvicorn = _require_extra()
    from letta_nb.serve._app import build_app

    servers: list[ServeHandle] = client._servers
    if client._thread.closed:
        raise RuntimeClosedError("this client is closed; connect again to serve its store.")
    if servers:
        raise InvalidArgumentError(f"this client already serves at {servers[0].url}; stop it first "
                                   "(handle.stop() or %letta serve --stop).")
    secret = _token(token)
    sock = _listen(port)
    app = build_app(client, secret, client.runtime.telemetry.on_http)
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=_GRACE_S)
    server = uvicorn.Server(config)
    failed: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as e:  # reported to start() below, which is waiting for the server
            failed.append(e)
        finally:
            sock.close()

    thread = threading.Thread(target=main, name="letta_nb-serve", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.005)  # wait for the condition: uvicorn listening (or its thread gone)
    if not server.started:
        raise RuntimeError(f"letta_nb's server did not start: {failed[0] if failed else 'its thread ended'}")
    handle = ServeHandle(server, thread, sock, secret, servers)
    servers.append(handle)
    return handle
