"""A TCP proxy the test controls: it forwards to Redis, drops every byte (a partition), or only replies.

A partition here behaves like a network link taken down: connections stay
open but nothing crosses them, and new connections are accepted but never
reach Redis, so the worker sees timeouts, not refusals. Healing closes the
stranded connections (as the peers' own timeouts would) and forwards again.
"""
from __future__ import annotations

import selectors
import socket
import threading


class PartitionProxy:
    """Listen on a free loopback port and forward to target while not partitioned."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.partitioned = threading.Event()
        self.replies_dropped = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> PartitionProxy:
        self.thread.start()
        return self

    def partition(self) -> None:
        """Stop forwarding: bytes sent either way are dropped."""
        self.partitioned.set()

    def drop_replies(self) -> None:
        """Forward what clients send, drop what Redis answers: a command runs, its reply never arrives."""
        self.replies_dropped.set()

    def heal(self) -> None:
        """Close connections stranded by the partition and forward again."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream in pairs:
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
        self.partitioned.clear()
        self.replies_dropped.clear()

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.heal()

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = None
            if not self.partitioned.is_set():
                try:
                    upstream = socket.create_connection(self.target, timeout=2)
                except OSError:
                    client.close()
                    continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket | None) -> None:
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        if upstream is not None:
            sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self.stopped.is_set():
                for key, _ in sel.select(timeout=0.5):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    # Partitioned (or accepted during one): the bytes vanish; so do replies while dropped.
                    reply = key.fileobj is upstream
                    if key.data is not None and not self.partitioned.is_set() \
                            and not (reply and self.replies_dropped.is_set()):
                        key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
