"""Put this folder on PYTHONPATH to run Python with the network blocked (local UNIX sockets still work).
Used by tests/test_pipeline.py to prove the default path needs no network."""

import socket

_connect = socket.socket.connect
MESSAGE = "network access blocked by tests/offline/sitecustomize.py"


def _guarded_connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect(self, address)
    raise OSError(MESSAGE)


def _refuse(*args, **kwargs):
    raise OSError(MESSAGE)


socket.socket.connect = _guarded_connect
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
