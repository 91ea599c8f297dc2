"""Runs a `kurzdraht user add|passwd` on a pseudo-terminal (its controlling terminal, as a
person at a console has) and types the two password entries when asked.

Usage: tty_password.py FIRST SECOND BINARY ARGS...
Prints `exit=<code>` and `transcript=<what the terminal showed, as a Python repr>`; exits 0
unless the terminal session itself broke (the command's own exit code is printed, not
returned), so the caller asserts on both.
"""

import os
import pty
import sys
import termios
import time


def read_until(fd, marker, transcript, deadline):
    while marker not in transcript[0]:
        if time.monotonic() > deadline:
            raise SystemExit(f"timeout waiting for {marker!r}: {transcript[0]!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            raise SystemExit(f"the terminal closed before {marker!r}: {transcript[0]!r}")
        if not chunk:
            raise SystemExit(f"the terminal closed before {marker!r}: {transcript[0]!r}")
        transcript[0] += chunk.decode("utf-8", "replace")


def type_hidden(fd, text, transcript, deadline):
    """Types `text` once the terminal no longer echoes (as the command turns echo off after
    its prompt): a command that never turns it off times out here."""
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.monotonic() > deadline:
            raise SystemExit(f"the terminal still echoes: {transcript[0]!r}")
        time.sleep(0.01)
    os.write(fd, (text + "\n").encode())


def main():
    first, second, binary, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["NO_COLOR"] = "1"
        os.execv(binary, [binary] + args)
    transcript = [""]
    deadline = time.monotonic() + 60
    read_until(fd, "New password for", transcript, deadline)
    read_until(fd, ": ", transcript, deadline)
    type_hidden(fd, first, transcript, deadline)
    read_until(fd, "The same again: ", transcript, deadline)
    type_hidden(fd, second, transcript, deadline)
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        transcript[0] += chunk.decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    print(f"exit={os.waitstatus_to_exitcode(status)}")
    print(f"transcript={transcript[0]!r}")


main()
