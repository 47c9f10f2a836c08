"""A TCP relay a test can cut: a network partition between two real processes, no root.

``TcpRelay(port).start()`` listens on a free 127.0.0.1 port and relays every connection to
``port``. :meth:`cut` stops relaying in both directions without closing anything — a silent
partition, as a dead switch gives: no FIN, no RST, the bytes wait in the kernel's buffers.
:meth:`heal` lets them flow again. Connections made while cut are accepted and wait too.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Final

from .net import free_port

_CHUNK: Final = 65536


class TcpRelay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-relay", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> TcpRelay:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()
        return self

    def cut(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        self._stop.set()
        self._flowing.set()
        self._thread.join(5)
        for sock in [*self._peers, self._listener]:
            sock.close()
        self._selector.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif self._flowing.is_set():
                    self._relay(sock)
            if not self._flowing.is_set():
                self._flowing.wait(0.05)  # cut: read nothing, so nothing moves

    def _accept(self) -> None:
        try:
            inbound, _ = self._listener.accept()
        except BlockingIOError:
            return
        outbound = socket.create_connection(self.target, timeout=5)
        for a, b in ((inbound, outbound), (outbound, inbound)):
            a.setblocking(True)
            self._peers[a] = b
            self._selector.register(a, selectors.EVENT_READ)

    def _relay(self, sock: socket.socket) -> None:
        other = self._peers.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(_CHUNK)
        except OSError:
            data = b""
        if data:
            try:
                other.sendall(data)
                return
            except OSError:
                pass
        for s in (sock, other):  # one side closed: close the pair
            self._peers.pop(s, None)
            self._selector.unregister(s)
            s.close()
