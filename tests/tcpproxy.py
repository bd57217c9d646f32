"""A TCP proxy that can cut a connection after so many bytes: a network fault at an exact moment."""

from __future__ import annotations

import socket
import threading

from inboxd.servers import HOST, free_port


class CuttingProxy:
    """Forwards 127.0.0.1:port to a target; the first connection is cut once the server has sent `cut_after` bytes."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port, self.cut_after = target_port, cut_after
        self.port = free_port()
        self.cuts = 0
        self._listener = socket.create_server((HOST, self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.target_port))
            budget = self.cut_after if self.cuts == 0 else None
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, budget), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        try:
            while data := source.recv(65536):
                if budget is not None:
                    budget -= len(data)
                    if budget <= 0:  # in the middle of whatever the server was sending
                        self.cuts += 1
                        break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()


class HoldingProxy:
    """Forwards 127.0.0.1:port to a target; holds the server's first IDLE continuation until it has more to say.

    The client then reads "+ idling" and the next response (an EXISTS) in one piece: the window in
    which a mail that came with IDLE's answer sits in the client's buffer, unseen by select().
    """

    def __init__(self, target_port: int, continuation: bytes = b"+ idling") -> None:
        self.target_port, self.continuation = target_port, continuation
        self.port = free_port()
        self.holding = threading.Event()  # a continuation is held now
        self.released = threading.Event()  # it went out, with what came after it
        self._listener = socket.create_server((HOST, self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.target_port))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        held = b""
        try:
            while data := source.recv(65536):
                if from_server and not self.released.is_set() and not held and self.continuation in data:
                    held = data  # IDLE's answer: keep it until the server says something more
                    self.holding.set()
                    continue
                if held:
                    data, held = held + data, b""
                    self.released.set()
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()
