"""What an adapter of one system implements, and the registry of adapters by system name.

An adapter is everything the peers benchmark knows of one system: the settings each of its solvers
runs with (recorded in every row), the timed call that runs it inside a child process on a case's
trained model, what the child records after it, how its (T, n) output maps onto I_ref, and how the
tables name it. Each adapter module registers one instance (:func:`register`); ``--systems``, the
JSON's ``normalisation`` and ``versions``, the import check and the child's dispatch all read the
registry.

Normalisation (checked against a float64 brute-force formula in tests/test_peers_benchmark.py):
every matrix is mapped onto I_ref = -grad L(z_test)^T (H + damping I)^-1 grad L(z_i), our
I_up,loss with the training gradients taken WITHOUT the L2 term (as the peers take them); each
adapter's ``normalisation`` says how, and is recorded in the JSON.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class Problem:
    """What the settings of a (system, solver) are derived from: one case's sizes and its
    regularisation, where the children compute, and (ours only) the case's LiSSA settings."""

    l2: float
    damping: float
    n: int  # training points
    p: int  # parameters
    batch_size: int  # the peers' DataLoader batch size
    rank: int | None  # of every low-rank method
    our_lissa: dict[str, Any] | None = None  # None: ours.LISSA (full batch)
    device: str = "cpu"


class Adapter(ABC):
    """One system. Class attributes name it; the methods run it. A method that is given a solver
    this system does not have raises :meth:`no_solver`."""

    name: ClassVar[str]  # its --systems name and every row's "system"
    title: ClassVar[str]  # as the tables name it
    distribution: ClassVar[str]  # its installed distribution, for the JSON's "versions"
    module: ClassVar[str | None] = None  # what must import for it to run (None: this package)
    normalisation: ClassVar[str]  # how its output maps onto I_ref, recorded in the JSON
    # solver -> the README table's label (format fields: iterations, rank, batches); the keys are
    # the solvers it has rows of, which ``--solvers`` offers
    labels: ClassVar[dict[str, str]]

    @abstractmethod
    def settings(self, solver: str, problem: Problem) -> dict[str, Any]:
        """The constructor arguments of ``solver`` on ``problem``, as recorded in the JSON."""

    @abstractmethod
    def run(
        self,
        model: torch.nn.Module,
        X: torch.Tensor,
        y: torch.Tensor,
        Xt: torch.Tensor,
        yt: torch.Tensor,
        solver: str,
        settings: dict[str, Any],
        *,
        checkpoint: str | None = None,
        workdir: Path | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """The timed call: construction, fit and the (T, n) matrix of every test point against
        every training point, on the model's device. ``checkpoint`` is the saved model's file,
        ``workdir`` a directory of its own. Returns (matrix, state for :meth:`after`)."""

    @abstractmethod
    def normalise(
        self, raw: np.ndarray, *, n_train: int, l2: float, s_dot_theta: np.ndarray | None = None
    ) -> np.ndarray:
        """``raw`` (float64) mapped onto I_ref, as :attr:`normalisation` says."""

    def after(self, state: Any) -> dict[str, Any]:
        """Untimed, what the child records of ``state`` (``run``'s second value): by default the
        installed defaults of the class it returned (``defaults``). An array ``s_dot_theta`` is
        saved beside the matrix for :meth:`normalise`."""
        return {"defaults": constructor_defaults(state)}

    def regularisation(self, l2: float, damping: float, n: int) -> float | None:
        """Our (l2, damping) as this system's Hessian regularisation; None for ours."""
        return None

    def warm_up_settings(
        self, solver: str, settings: dict[str, Any], timed: dict[str, Any]
    ) -> dict[str, Any]:
        """``settings`` of the untimed warm-up on a tiny problem, shortened where the solver
        would iterate for long; ``timed`` are the settings of the timed run."""
        return settings

    def no_solver(self, solver: str) -> ValueError:
        return ValueError(f"no solver {solver!r} for system {self.name!r}")


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    """Add ``adapter`` under its name (each name once); returns it."""
    if adapter.name in _REGISTRY:
        raise ValueError(f"system {adapter.name!r} is registered twice")
    _REGISTRY[adapter.name] = adapter
    return adapter


def adapter(system: str) -> Adapter:
    """The adapter of ``system``, or ValueError."""
    if system not in _REGISTRY:
        raise ValueError(f"unknown system {system!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[system]


def adapters() -> list[Adapter]:
    """Every registered adapter, in the order registered."""
    return list(_REGISTRY.values())


def systems() -> tuple[str, ...]:
    """The choices of ``--systems``."""
    return tuple(_REGISTRY)


def solvers() -> tuple[str, ...]:
    """The choices of ``--solvers``: every solver some system has rows of."""
    return tuple(dict.fromkeys(s for a in adapters() for s in a.labels))


# ----- the registry's answers, for the runner, the child and the tests ---------------------------
def settings_for(
    system: str,
    solver: str,
    *,
    l2: float,
    damping: float,
    n: int,
    p: int,
    batch_size: int,
    rank: int | None,
    our_lissa: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """The constructor arguments of one (system, solver), as recorded in the JSON; ``device``
    (``--device``) only changes Kronfluence's ``cpu`` flag (the others follow the model's)."""
    if system not in _REGISTRY:
        raise ValueError(f"no solver {solver!r} for system {system!r}")
    problem = Problem(l2, damping, n, p, batch_size, rank, our_lissa, device)
    return _REGISTRY[system].settings(solver, problem)


def normalise(
    system: str,
    raw: np.ndarray,
    *,
    n_train: int,
    l2: float,
    s_dot_theta: np.ndarray | None = None,
) -> np.ndarray:
    """Map a system's (T, n) output onto I_ref = -grad L(z_test)^T H^-1 grad L(z_i) (no L2 term
    in the training gradient), following its adapter's ``normalisation``."""
    raw = np.asarray(raw, dtype=np.float64)
    return adapter(system).normalise(raw, n_train=n_train, l2=l2, s_dot_theta=s_dot_theta)


def regularisation(case_l2: float, damping: float, n: int) -> dict[str, float]:
    """Our (l2, damping) as each peer's Hessian regularisation (see each peer's module)."""
    out = {a.name: a.regularisation(case_l2, damping, n) for a in adapters()}
    return {name: value for name, value in out.items() if value is not None}


def normalisations() -> dict[str, str]:
    """Every system's normalisation, as the JSON records them."""
    return {a.name: a.normalisation for a in adapters()}


# ----- shared by the adapters --------------------------------------------------------------------
def data_loader(X: torch.Tensor, y: torch.Tensor, batch_size: int):
    """The peers' DataLoader: (X, y) in order, in batches of ``batch_size``."""
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=False)


def constructor_defaults(cls) -> dict[str, Any]:
    """The installed class's keyword defaults, for the record of what 'defaults' meant."""
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if param.default is not inspect.Parameter.empty:
            value = param.default
            out[name] = value if isinstance(value, int | float | str | bool | None) else repr(value)
    return out
