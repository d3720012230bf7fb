"""The parts of the peers benchmark, whose command line is benchmarks/peers.py.

One adapter per system, each in its own module and registering itself with :mod:`.base`
(:func:`.base.register`): ``ours``, ``pydvl``, ``captum``, ``kronfluence``. Beside them: the cases
(:mod:`.cases`), what runs inside a child process (:mod:`.child`), the parent's runs of every
(system, solver) in child processes and the rows made of them (:mod:`.runner`), the results file
(:mod:`.report`), the issue's targets (:mod:`.targets`) and the printed and Markdown tables
(:mod:`.table`). :mod:`.dattri_lds` is dattri's adapter for benchmarks/lds.py, not an adapter of
this benchmark: it is not registered, and importing the package does not import it.

Importing the package imports the adapter modules named in :data:`ADAPTER_MODULES`, in that order:
the order of ``--systems`` and of the JSON's ``normalisation`` and ``versions``. A new peer is a new
module here with an :class:`.base.Adapter` that it registers, its name added to
:data:`ADAPTER_MODULES`, and its (system, solver) runs named in the cases of :mod:`.cases`.
"""

from __future__ import annotations

import importlib

ADAPTER_MODULES = ("ours", "pydvl", "captum", "kronfluence")

for _module in ADAPTER_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
