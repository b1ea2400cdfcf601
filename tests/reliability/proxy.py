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
        self.commands_left: int | None = None  # partition_after's countdown
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

    def partition_after(self, commands: int) -> None:
        """Forward the next `commands` commands that clients send (counted over every connection, those setting
        up a connection not counted), then partition: the last one runs in Redis, and its reply and everything
        sent after it are dropped (a client cut off between two commands, or in the middle of a pipeline)."""
        with self.lock:
            self.commands_left = commands

    def _forward_counted(self, data: bytes, pending: bytearray, upstream: socket.socket) -> None:
        """Forward what a client sent one whole command at a time while partition_after counts down."""
        pending += data
        commands, rest = split_commands(bytes(pending))
        pending[:] = rest
        for command in commands:
            with self.lock:
                if self.partitioned.is_set():
                    return
                upstream.sendall(command)
                if self.commands_left is not None and command_name(command) not in CONNECTION_COMMANDS:
                    self.commands_left -= 1
                    if self.commands_left <= 0:
                        self.commands_left = None
                        self.partitioned.set()

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
        with self.lock:
            self.commands_left = None  # a countdown the clients did not reach ends too

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
        pending = bytearray()  # a client's partial command, while partition_after counts
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
                        if not reply and (self.commands_left is not None or pending):
                            self._forward_counted(data, pending, key.data)
                        else:
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


CONNECTION_COMMANDS = {b"AUTH", b"HELLO", b"CLIENT", b"SELECT", b"PING", b"SUBSCRIBE", b"PSUBSCRIBE"}
"""What a client sends on a new connection, or a listener on its own: not counted by partition_after, so the
count follows one request's own commands whichever connection it found open."""


def command_name(command: bytes) -> bytes:
    """The name of one whole RESP command, upper case."""
    _, length, rest = command.split(b"\r\n", 2)
    return rest[:int(length[1:])].upper()


def split_commands(stream: bytes) -> tuple[list[bytes], bytes]:
    """The whole commands at the start of a client's RESP stream (arrays of bulk strings, as redis-py sends them),
    and what is left of an incomplete one."""
    commands, at = [], 0
    while stream.startswith(b"*", at):
        end = stream.find(b"\r\n", at)
        if end < 0:
            break
        cursor = end + 2
        for _ in range(int(stream[at + 1:end])):
            end = stream.find(b"\r\n", cursor)
            if end < 0:
                break
            cursor = end + 2 + int(stream[cursor + 1:end]) + 2
        else:
            if cursor <= len(stream):
                commands.append(stream[at:cursor])
                at = cursor
                continue
        break
    return commands, stream[at:]
