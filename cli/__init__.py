"""The `quijote` command line (`cli.main`). Its entry point is here, importing nothing heavy,
so that Ctrl-C while Python loads the command's modules ends it as Ctrl-C does later: one
line, "interrupted", and exit status 130, never a traceback."""

import os
import signal


def main() -> None:
    """`quijote`: cli.main's app, loaded with Ctrl-C ending the process (its callback then
    makes Ctrl-C a KeyboardInterrupt again, before the command's work)."""
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    from cli.main import main as run

    run()


def _interrupted_while_loading(signum: int, frame: object) -> None:
    os.write(2, b"interrupted\n")
    os._exit(130)  # loading writes nothing: there is nothing to clean up
