"""Run an app with a kill planted at an exact point, for tests of killed and restarted training runs.

    python tests/e2e/run_app.py train_dit --kill after_save:2:1 -- <app flags>    # under torchrun too

`--kill after_save:STEP:RANK`: the process of rank RANK kills itself (SIGKILL) right after the checkpoint
of step STEP is complete. `--kill in_save:STEP`: every process kills itself in the middle of writing the
checkpoint of step STEP (shards written, state.json not yet).
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import load_app  # noqa: E402


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser()
    p.add_argument("app")
    p.add_argument("--kill", default="")
    a = p.parse_args(argv[:split])
    rest = argv[split + 1:]
    app = load_app(a.app)
    kind, _, spec = a.kill.partition(":")
    if kind == "after_save":
        step, rank = (int(x) for x in spec.split(":"))
        original = app.save_checkpoint

        def save_then_die(root, s, *args, **kwargs):
            path = original(root, s, *args, **kwargs)
            if s == step and int(os.environ.get("RANK", 0)) == rank:
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        app.save_checkpoint = save_then_die
    elif kind == "in_save":
        import ea_dit.training.checkpoint as ck

        step = int(spec)
        original_write = ck._write_state

        def die_while_writing(folder, state):
            if state["step"] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            original_write(folder, state)

        ck._write_state = die_while_writing
    return app.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
