"""The reaper: removes the temporaries of an `svc` process that was killed outright.

A process can clean up after SIGINT, SIGTERM or SIGHUP (fsutil, cli), but not after SIGKILL,
and SIGKILL is what the kernel's out-of-memory killer sends: a 4K encode on a small machine
would otherwise leave a hidden, half-written `.out.svc.1a2b3c` behind. So fsutil starts this
script as a small separate process (``python -I -S fsreaper.py``, in its own session so that
the terminal's signals do not reach it) while temporaries exist, and tells it through a pipe
of each one: ``+PATH\\0`` when it is registered, ``-PATH\\0`` when it is published or discarded.
The pipe reaches end-of-file however the writer ends; whatever is still registered then is
removed. The normal ending, every temporary published or discarded, leaves nothing to do.

Standard library only, and never imported by svcodec: it runs as a script, without the package.
"""

import os
import shutil


def read_registrations(fd: int) -> set:
    """Follow the +/- records on ``fd`` until end-of-file; the paths still registered."""
    live: set = set()
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            return live
        records = (pending + chunk).split(b"\0")
        pending = records.pop()  # an incomplete last record waits for its end
        for record in records:
            path = record[1:]
            if record[:1] == b"+":
                live.add(path)
            else:
                live.discard(path)


def remove(path: bytes) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    except OSError:
        pass


def main() -> None:
    for path in read_registrations(0):
        remove(path)


if __name__ == "__main__":
    main()
