"""One Influence used from two threads at once, as the explorer does (a click in the kernel's
thread beside a Verify or Attack run in the background): torch's functional_call swaps tensors into
the shared module for the length of a pass, so passes, hooks and copies must take turns."""

from __future__ import annotations

import threading
import time

import torch

import influence_widgets as iw
from tests.conftest import make_mlp


def test_copies_and_gradients_from_two_threads_do_not_collide():
    pb = make_mlp()
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    reference = inf.test_gradients(pb.Xt, pb.yt)
    errors: list[BaseException] = []
    stop = threading.Event()

    def copy_models() -> None:
        try:
            while not stop.is_set():
                inf.objective.model_copy()
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    thread = threading.Thread(target=copy_models, daemon=True)
    thread.start()
    deadline = time.perf_counter() + 3.0
    try:
        while time.perf_counter() < deadline and not errors:
            assert torch.equal(inf.test_gradients(pb.Xt, pb.yt), reference)
    finally:
        stop.set()
        thread.join()
    assert not errors, f"model_copy() beside a gradient pass raised {errors[0]!r}"
