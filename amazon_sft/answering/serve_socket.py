"""The server under the app (``serve.create_app``): the socket, taken before the model loads,
and uvicorn, told of a stop signal so that the app starts no waiting answer (a second ends the
one being generated)."""

import errno
import socket
import threading

from amazon_sft.answering.serve_guards import HEADER_TIMEOUT_S, guarded_protocol, listen_backlog
from amazon_sft.errors import UserError


def check_port(port: int) -> None:
    """``serve --port``: a TCP port; refused here, not by ``bind()`` in a traceback."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535 (0: any free port), got {port}")


def check_host(host: str) -> None:
    """``serve --host ''`` (an unset ``$HOST``) bound every interface, while the help says the
    default is this machine only (a hostile user's trial): an empty host is refused."""
    if not host.strip():
        raise UserError(
            "--host is empty: give 127.0.0.1 (this machine only, the default) or 0.0.0.0 "
            "(every interface)"
        )


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, made before the model loads: a port that cannot be
    had is a one-line error then, not uvicorn's after a long load, and ``--port 0`` has its real
    port to print. It listens at once, so no other process can take the port meanwhile (clients
    that come during the load wait in the backlog). Bound as uvicorn binds: IPv6 when the host
    has a colon, ``SO_REUSEADDR`` so a restart need not wait for old connections to time out."""
    check_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(listen_backlog())
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(
                f"--port {port} is already in use on {host}: stop what serves there, or give "
                "another --port (0: any free port)"
            ) from None
        reason = err.strerror or str(err)  # an address not of this machine, a privileged port
        raise UserError(
            f"cannot listen on --host {host} --port {port} ({reason}): give an address of this "
            "machine and a port it may use (1024 or above without privileges)"
        ) from None
    return sock


def address(sock: socket.socket) -> str:
    """The URL of a listening socket, its port the one bound (``--port 0`` picks one)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` (``listen``) until stopped."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        http=guarded_protocol(),
        backlog=listen_backlog(),
    )
    stopping_server(config, app).run(sockets=[sock])


def stopping_server(config, app):
    """uvicorn's server, telling ``app`` (``create_app``'s) when a stop signal comes: the first
    starts no waiting answer, a second ends the one being generated."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.stop(force=self.should_exit)
            super().handle_exit(sig, frame)

    return Server(config)


class BackgroundServer:
    """The app on a local port in a thread (tests and screenshots): ``with BackgroundServer(app) as url``."""

    def __init__(
        self, app, port: int, header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = 0
    ) -> None:
        import uvicorn

        self.port = port
        http = guarded_protocol(header_timeout_s, max_connections)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            http=http,
            backlog=listen_backlog(max_connections),
        )
        self.server = stopping_server(config, app)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
