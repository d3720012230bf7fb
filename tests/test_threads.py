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


def _in_two_threads(work, seconds: float = 2.0) -> list[BaseException]:
    """Run ``work()`` in this thread and in another for ``seconds``; the errors of either."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.is_set():
                work()
        except BaseException as err:  # reported by the caller, in the test's thread
            errors.append(err)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline and not errors:
            work()
    except BaseException as err:
        errors.append(err)
    finally:
        stop.set()
        thread.join()
    return errors


def test_forward_mode_products_from_two_threads_do_not_collide():
    """Hessian-vector products (jvp of grad) in two threads at once, as when the explorer
    precomputes in the background while the notebook calls ``inf.top()``: torch.func keeps its
    forward-AD levels in process-wide state ("Trying to access a forward AD level with an invalid
    index")."""
    pb = make_mlp()
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    V = torch.randn(inf.p, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference = inf.op.matvec(V)

    def product() -> None:
        assert torch.allclose(inf.op.matvec(V), reference, rtol=1e-12, atol=1e-14)

    errors = _in_two_threads(product)
    assert not errors, f"HVPs in two threads raised {errors[0]!r}"


def test_a_call_while_another_thread_fits_waits_for_that_fit():
    """``inf.top()`` while the explorer's thread is fitting waits for that fit (one fit), and
    gets the scores of a model fitted alone."""
    pb = make_mlp()
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, solver="cg", progress=False)
    fits, fitting = [], threading.Event()
    solver_fit = inf.solver.fit

    def slow_fit(*args, **kwargs):
        fits.append(threading.get_ident())
        fitting.set()
        time.sleep(0.5)  # a fit that takes a while: the other thread asks meanwhile
        return solver_fit(*args, **kwargs)

    inf.solver.fit = slow_fit
    thread = threading.Thread(target=inf.fit, daemon=True)
    thread.start()
    assert fitting.wait(30)
    top = inf.top(pb.Xt[:2], pb.yt[:2], k=3)
    thread.join()
    assert len(fits) == 1, f"{len(fits)} fits; a call during a fit must wait for it"
    alone = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, solver="cg", progress=False)
    assert torch.equal(top.helpful, alone.top(pb.Xt[:2], pb.yt[:2], k=3).helpful)
