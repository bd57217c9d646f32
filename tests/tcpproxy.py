"""TCP proxies that meddle with what a server sends at an exact moment: a cut, two answers made one, a freeze."""

from __future__ import annotations

import socket
import threading

from inboxd.servers import HOST, free_port


class _Proxy:
    """Forwards 127.0.0.1:port to a target, one thread per direction; subclasses change what the server sends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
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
            try:
                server = socket.create_connection((HOST, self.target_port))
            except OSError:  # the server is down (restarting): this client finds its connection closed
                client.close()
                continue
            from_server = self._from_server()
            threading.Thread(target=self._pump, args=(client, server, lambda data: data), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, from_server), daemon=True).start()

    def _from_server(self):
        """For a new connection: what goes on to the client of each chunk the server sent (None: cut here)."""
        return lambda data: data

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, passed) -> None:
        try:
            while data := source.recv(65536):
                data = passed(data)
                if data is None:
                    break
                if data:
                    sink.sendall(data)
        except OSError:
            pass
        close_both(source, sink)


class CuttingProxy(_Proxy):
    """The first connection is cut once the server has sent `cut_after` bytes."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.cut_after, self.cuts = cut_after, 0
        super().__init__(target_port)

    def _from_server(self):
        if self.cuts:
            return super()._from_server()
        left = [self.cut_after]

        def passed(data: bytes) -> bytes | None:
            left[0] -= len(data)
            if left[0] <= 0:  # in the middle of whatever the server was sending
                self.cuts += 1
                return None
            return data
        return passed


class HoldingProxy(_Proxy):
    """Holds the server's first IDLE continuation until it has more to say.

    The client then reads "+ idling" and the next response (an EXISTS) in one piece: the window in
    which a mail that came with IDLE's answer sits in the client's buffer, unseen by select().
    """

    def __init__(self, target_port: int, continuation: bytes = b"+ idling") -> None:
        self.continuation = continuation
        self.holding = threading.Event()  # a continuation is held now
        self.released = threading.Event()  # it went out, with what came after it
        super().__init__(target_port)

    def _from_server(self):
        held = [b""]

        def passed(data: bytes) -> bytes:
            if not self.released.is_set() and not held[0] and self.continuation in data:
                held[0] = data  # IDLE's answer: kept until the server says something more
                self.holding.set()
                return b""
            if held[0]:
                data, held[0] = held[0] + data, b""
                self.released.set()
            return data
        return passed


class FreezingProxy(_Proxy):
    """After `freeze()` nothing passes, either way, and nothing is closed: a network that swallows packets.

    Both ends' sockets stay open and their kernels keep taking bytes, so neither a close nor a TCP
    keepalive tells either end anything. There is no thaw: what was swallowed stays swallowed.
    """

    def __init__(self, target_port: int) -> None:
        self.frozen = threading.Event()
        super().__init__(target_port)

    def freeze(self) -> None:
        self.frozen.set()

    def _pump(self, source: socket.socket, sink: socket.socket, passed) -> None:
        try:
            while data := source.recv(65536):
                self._stop_if_frozen()
                sink.sendall(data)
        except OSError:
            pass
        self._stop_if_frozen()  # an end closing is swallowed too
        close_both(source, sink)

    def _stop_if_frozen(self) -> None:
        if self.frozen.is_set():
            threading.Event().wait()  # this direction's thread stops for good


def close_both(*ends: socket.socket) -> None:
    """End a relayed connection on both sides, whichever already went."""
    for end in ends:
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()
