"""Bad inputs of the attribution methods beside ``Influence`` (Grad-Dot, TracIn, TRAK, influence
ensembles), their checkpoints and the contract: each case is a call that must raise the exception
type given, with a message that matches a regex naming the argument at the start of the message
and, where there is one, the fix. A test checks that this list names every case and nothing else.

Checkpoints and TracIn
- tracin_without_checkpoints: ``iw.TracIn(model, train)``, no checkpoints passed
- tracin_empty_recorder: a ``CheckpointRecorder`` that saved nothing
- tracin_state_dicts: a list of ``state_dict()`` instead of checkpoints
- tracin_recorder_of_another_architecture: checkpoints of a wider model
- checkpoint_lr_negative: ``rec.save(lr=-0.1)``
- checkpoint_lr_string: ``rec.save(lr="0.1")``
- checkpoint_lr_nan: ``rec.save(lr=nan)``
- recorder_not_a_model: ``iw.CheckpointRecorder("model")``
- train_recorder_of_another_model: ``iw.train(model, data, recorder=CheckpointRecorder(other))``
- train_recorder_not_a_recorder: ``iw.train(model, data, recorder=[])``

TRAK
- trak_k_above_p: ``projection_dim`` larger than the parameter count
- trak_k_zero: ``projection_dim=0``
- trak_k_float: ``projection_dim=2.5``
- trak_identity_with_k: ``projection="identity"`` with a ``projection_dim``
- trak_projection_unknown: ``projection="sjlt"``
- trak_curvature_unknown: ``curvature="fisher"``
- trak_damping_negative: ``damping=-1``
- trak_singular_kernel: ``damping=0`` with k larger than n
- trak_memory_zero: ``memory_mb=0``
- trak_seed_negative: ``seed=-1``
- trak_models_empty: ``models=[]``
- trak_models_not_modules: ``models=["a", "b"]``
- trak_models_mismatch: two models of different architectures
- trak_empty_recorder: a ``CheckpointRecorder`` that saved nothing
- trak_real_targets: real-valued targets (TRAK needs class labels)

Grad-Dot, ensembles, the contract
- graddot_top_k_zero: ``top(k=0)``
- graddot_gradient_cache_negative: ``gradient_cache_mb=-1``
- graddot_batch_size_zero: ``batch_size=0``
- graddot_y_test_none_regression: ``y_test=None`` with an mse loss (no class to explain)
- graddot_one_point_without_batch: one test point without its batch dimension
- ensemble_models_mismatch: an ensemble of two architectures
- ensemble_bad_option: ``InfluenceEnsemble(..., l2=-1)``
- check_method_not_a_method: ``iw.check_method(model)``
- cancellable_bool: ``iw.cancellable(True)``
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import influence_widgets as iw
from tests.tiny_inputs import C, D, blobs, linear

pytestmark = pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")


def wide() -> nn.Linear:
    """A model of another architecture than ``linear()``."""
    return nn.Linear(D + 1, C, dtype=torch.float64)


def recorder(model: nn.Module | None = None, saves: int = 1) -> iw.CheckpointRecorder:
    rec = iw.CheckpointRecorder(model if model is not None else linear())
    for _ in range(saves):
        rec.save(lr=0.1)
    return rec


def tracin(checkpoints=None, model=None, **kw) -> iw.TracIn:
    return iw.TracIn(model or linear(), blobs(), checkpoints, progress=False, **kw)


def trak(models=None, train=None, **kw) -> iw.TRAK:
    options = {"damping": 0.1, "progress": False, **kw}
    return iw.TRAK(models if models is not None else linear(), train or blobs(), **options)


def grad_dot(**kw) -> iw.GradDot:
    return iw.GradDot(linear(), blobs(), progress=False, **kw)


def regression_grad_dot() -> torch.Tensor:
    X, _ = blobs()
    model = nn.Linear(D, 1, dtype=torch.float64)
    return iw.GradDot(model, (X, X.sum(1, keepdim=True)), loss="mse", progress=False).scores(
        X[:2], None
    )


def enter(context) -> None:
    with context:
        pass


P = D * C + C  # parameters of linear()
HOW = r".*iw\.CheckpointRecorder\(model\).*rec\.save\(lr=\.\.\.\)"

CASES = [
    pytest.param(lambda: tracin(), ValueError, r"^checkpoints: TracIn needs saved checkpoints" + HOW, id="tracin_without_checkpoints"),
    pytest.param(lambda: tracin(recorder(saves=0)), ValueError, r"^checkpoints: no checkpoint was saved" + HOW, id="tracin_empty_recorder"),
    pytest.param(lambda: tracin([linear().state_dict()]), TypeError, r"^checkpoints: expected a CheckpointRecorder or a list of iw\.Checkpoint, found a state_dict in the list; wrap each as iw\.Checkpoint\(state=state_dict, lr=\.\.\.\)", id="tracin_state_dicts"),
    pytest.param(lambda: tracin(recorder(wide())), ValueError, r"^checkpoints\[0\]: does not fit the model: 'weight' has shape \(3, 4\).*same architecture", id="tracin_recorder_of_another_architecture"),
    pytest.param(lambda: recorder(saves=0).save(lr=-0.1), ValueError, r"^lr: expected a finite learning rate >= 0", id="checkpoint_lr_negative"),
    pytest.param(lambda: recorder(saves=0).save(lr="0.1"), TypeError, r"^lr: expected the learning rate as a number", id="checkpoint_lr_string"),
    pytest.param(lambda: recorder(saves=0).save(lr=float("nan")), ValueError, r"^lr: expected a finite", id="checkpoint_lr_nan"),
    pytest.param(lambda: iw.CheckpointRecorder("model"), TypeError, r"^model: expected a torch\.nn\.Module", id="recorder_not_a_model"),
    pytest.param(lambda: iw.train(linear(), blobs(), progress=False, recorder=recorder(saves=0)), TypeError, r"^recorder: expected an iw\.CheckpointRecorder\(model\) of the model being trained, got a recorder of another model", id="train_recorder_of_another_model"),
    pytest.param(lambda: iw.train(linear(), blobs(), progress=False, recorder=[]), TypeError, r"^recorder: expected an iw\.CheckpointRecorder\(model\)", id="train_recorder_not_a_recorder"),
    pytest.param(lambda: trak(projection_dim=P + 1), ValueError, rf"^projection_dim: k = {P + 1} exceeds the p = {P} parameters.*projection_dim <= {P}.*projection='identity'", id="trak_k_above_p"),
    pytest.param(lambda: trak(projection_dim=0), ValueError, r"^projection_dim: must be a positive integer", id="trak_k_zero"),
    pytest.param(lambda: trak(projection_dim=2.5), TypeError, r"^projection_dim: expected a positive integer", id="trak_k_float"),
    pytest.param(lambda: trak(projection="identity", projection_dim=4), ValueError, rf"^projection_dim: projection='identity' keeps all p = {P} dimensions; leave projection_dim out", id="trak_identity_with_k"),
    pytest.param(lambda: trak(projection="sjlt"), ValueError, r"^projection: expected one of \('gaussian', 'rademacher', 'identity'\)", id="trak_projection_unknown"),
    pytest.param(lambda: trak(curvature="fisher"), ValueError, r"^curvature: expected one of \('trak', 'gauss-newton'\)", id="trak_curvature_unknown"),
    pytest.param(lambda: trak(damping=-1), ValueError, r"^damping: must be a finite number >= 0", id="trak_damping_negative"),
    pytest.param(lambda: trak(damping=0, train=(blobs()[0][:6], blobs()[1][:6])), ValueError, r"^damping: 0 with projection_dim k = 12 > n = 6 training points.*pass damping > 0 or projection_dim <= 6", id="trak_singular_kernel"),
    pytest.param(lambda: trak(memory_mb=0), ValueError, r"^memory_mb: must be > 0", id="trak_memory_zero"),
    pytest.param(lambda: trak(seed=-1), ValueError, r"^seed: expected an integer in \[0, 2\*\*64\)", id="trak_seed_negative"),
    pytest.param(lambda: trak([]), ValueError, r"^models: the list is empty", id="trak_models_empty"),
    pytest.param(lambda: trak(["a", "b"]), TypeError, r"^models: item 0 is a str, not a torch\.nn\.Module", id="trak_models_not_modules"),
    pytest.param(lambda: trak([linear(), wide()]), ValueError, r"^models\[1\]: does not fit the model", id="trak_models_mismatch"),
    pytest.param(lambda: trak(recorder(saves=0)), ValueError, r"^models: the CheckpointRecorder holds no checkpoint", id="trak_empty_recorder"),
    pytest.param(lambda: trak(train=(blobs()[0], blobs()[0][:, 0])), ValueError, r"^train\[1\] \(y\): expected integer class indices", id="trak_real_targets"),
    pytest.param(lambda: grad_dot().top(*blobs(), k=0), ValueError, r"^k: must be a positive integer", id="graddot_top_k_zero"),
    pytest.param(lambda: grad_dot(gradient_cache_mb=-1), ValueError, r"^gradient_cache_mb: must be a finite number >= 0", id="graddot_gradient_cache_negative"),
    pytest.param(lambda: grad_dot(batch_size=0), ValueError, r"^batch_size: must be a positive integer", id="graddot_batch_size_zero"),
    pytest.param(regression_grad_dot, ValueError, r"^y_test: None \(explain the predicted class\) needs a classification loss", id="graddot_y_test_none_regression"),
    pytest.param(lambda: grad_dot().scores(blobs()[0][0], blobs()[1][0]), ValueError, r"^x_test, y_test: expected a batch with a leading dimension; for one point pass x\[None\]", id="graddot_one_point_without_batch"),
    pytest.param(lambda: iw.InfluenceEnsemble([linear(), wide()], blobs()), ValueError, r"^models\[1\]: does not fit the model", id="ensemble_models_mismatch"),
    pytest.param(lambda: iw.InfluenceEnsemble([linear(), linear()], blobs(), l2=-1), ValueError, r"^l2: must be a finite number >= 0", id="ensemble_bad_option"),
    pytest.param(lambda: iw.check_method(linear()), TypeError, r"^method: expected an attribution method \(iw\.Influence, iw\.GradDot", id="check_method_not_a_method"),
    pytest.param(lambda: enter(iw.cancellable(True)), TypeError, r"^cancel: expected a threading\.Event", id="cancellable_bool"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "pattern"), CASES)
def test_bad_input_names_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_the_docstring_lists_every_case_once():
    listed = re.findall(r"^- (\S+): \S", __doc__, flags=re.MULTILINE)
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids), "two cases share an id"
    assert len(set(listed)) == len(listed), "the docstring lists a case twice"
    assert set(ids) - set(listed) == set(), "cases missing from the docstring"
    assert set(listed) - set(ids) == set(), "the docstring lists cases that do not exist"


def test_a_rejected_method_leaves_its_inputs_untouched(untouched):
    model, (X, y) = linear(), blobs()
    rec = recorder(wide())
    with untouched(model, X, y), pytest.raises(ValueError, match=r"^checkpoints\[0\]"):
        iw.TracIn(model, (X, y), rec, progress=False)
    with untouched(model, X, y), pytest.raises(ValueError, match=r"^projection_dim"):
        iw.TRAK(model, (X, y), projection_dim=P + 1, progress=False)
