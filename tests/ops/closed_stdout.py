"""Runs `consent-service` commands with stdout a pipe whose reader is gone (`… | head`, head
having exited before the command writes), and reports how each ended.

Input (stdin): a JSON list of commands, each `{"args": [...], "env": {...}}`. Output (stdout): a
JSON list of `[exit status, stderr]`, in the same order. The CLI is imported once and each
command runs in a fork of this process, all at once (a fresh interpreter per command costs two
seconds of imports); each child leaves through the interpreter's own exit, as the real program
does, so what Python prints then ("Exception ignored … BrokenPipeError") is in its stderr.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import tempfile
from typing import IO, Any


def main() -> None:
    from service.cli import app

    commands: list[dict[str, Any]] = json.load(sys.stdin)
    gc.freeze()  # the children's collections skip the imports: a fork costs half as much
    with contextlib.ExitStack() as files:
        children: list[tuple[int, IO[bytes]]] = []
        for command in commands:
            reader, writer = os.pipe()
            os.close(reader)  # gone before the command writes a byte
            err = files.enter_context(tempfile.TemporaryFile())
            pid = os.fork()
            if pid == 0:
                os.dup2(writer, 1)
                os.dup2(err.fileno(), 2)
                os.environ.update(command["env"])
                app(command["args"], prog_name="consent-service")  # exits: SystemExit
                raise SystemExit(0)
            os.close(writer)
            children.append((pid, err))
        results = []
        for pid, stderr in children:
            _, status = os.waitpid(pid, 0)
            stderr.seek(0)
            results.append([os.waitstatus_to_exitcode(status), stderr.read().decode()])
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
