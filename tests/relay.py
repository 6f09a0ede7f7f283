"""A TCP relay from a local port to a real server, for the fault tests: the client talks to the relay, which
forwards every byte unless a subclass decides otherwise (holds it back, drops a reply)."""
from __future__ import annotations

import socket
import threading
from typing import List, Tuple


class Relay:
    """Forwards each connection to ``host:port``; :meth:`forward` says what becomes of each chunk received."""

    def __init__(self, host: str, port: int) -> None:
        self.target: Tuple[str, int] = (host, port)
        self.sockets: List[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink, to_client in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, to_client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_client: bool) -> None:
        try:
            while self.forward(source.recv(65536), source, sink, to_client):
                pass
        except OSError:
            return

    def forward(self, data: bytes, source: socket.socket, sink: socket.socket, to_client: bool) -> bool:
        """Pass ``data`` on (its end, when empty); False ends this direction of the connection."""
        if not data:
            sink.shutdown(socket.SHUT_WR)
            return False
        sink.sendall(data)
        return True

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()
