"""What the explorer's Python side and its front end (``js/explorer.js``) exchange, in one place.

The synced traits ``panel``, ``verify``, ``attack``, ``review`` and ``review_retrain`` hold the dicts
declared here (``verify``: a :class:`VerifyState` or an :class:`LDSState`, by its ``kind``), and the front end's buttons send ``{"event": NAME}`` messages with the event names
below; the explorer hands each to the tab whose ``handlers`` name it. The tabs and the tests build
and read these shapes through this module; the front end uses the same keys and the same event
strings (a test checks that each event name appears in the script).
"""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = [
    "ATTACK_CANCEL",
    "ATTACK_RUN",
    "ATTACK_SEARCH",
    "EVENTS",
    "FIX_EVENTS",
    "IDLE",
    "REVIEW_CANCEL",
    "REVIEW_CLEAR",
    "REVIEW_CLEAR_ALL",
    "REVIEW_RELABEL",
    "REVIEW_REMOVE",
    "REVIEW_RETRAIN",
    "VERIFY_CANCEL",
    "VERIFY_RUN",
    "AttackItem",
    "AttackState",
    "CompareColumn",
    "CompareState",
    "JobState",
    "JobStateName",
    "LDSState",
    "MethodInfo",
    "Panel",
    "ReviewItem",
    "ReviewOutcome",
    "ReviewRetrainState",
    "ReviewState",
    "TrainItem",
    "VERIFY_MODES",
    "VerifyMode",
    "VerifyState",
    "job_failed",
    "job_started",
]

# ----- events: {"event": NAME} messages the front end sends -----------------------------------
VERIFY_RUN = "verify_run"  # runs the check the trait ``verify_mode`` names (VERIFY_MODES)
VERIFY_CANCEL = "verify_cancel"  # stops the running check, whichever it is
ATTACK_RUN = "attack_run"
ATTACK_CANCEL = "attack_cancel"
ATTACK_SEARCH = "attack_search"  # "Find smallest eps"
REVIEW_CLEAR_ALL = "review_clear_all"  # the Review tab's
REVIEW_RETRAIN = "review_retrain"
REVIEW_CANCEL = "review_cancel"
EVENTS = (
    VERIFY_RUN,
    VERIFY_CANCEL,
    ATTACK_RUN,
    ATTACK_CANCEL,
    ATTACK_SEARCH,
    REVIEW_CLEAR_ALL,
    REVIEW_RETRAIN,
    REVIEW_CANCEL,
)
# The Review tab's per-point fixes: {"event": NAME, "index": training index} and, for RELABEL,
# "label": a class index.
REVIEW_RELABEL = "review_relabel"
REVIEW_REMOVE = "review_remove"
REVIEW_CLEAR = "review_clear"
FIX_EVENTS = (REVIEW_RELABEL, REVIEW_REMOVE, REVIEW_CLEAR)

# "cancelling": Cancel was pressed, the run stops at its next check; then "cancelled"
JobStateName = Literal["idle", "running", "cancelling", "done", "cancelled", "error"]


# ----- the Influence pane: the ``panel`` trait ({} before the first selection) -----------------
class TrainItem(TypedDict, total=False):
    """One helpful or harmful training point: ``png`` or ``text`` (see DisplayData.item), or for
    tabular data ``differences`` (the card's table beside the test point)."""

    index: int
    label: str
    score: float  # predicted_removal_effect: change of the test loss on removal (> 0 helped)
    # True for a harmful point of the label the scores are for, or a helpful one of another:
    # the panel's ``notes`` says why such a point scores so; absent for the others
    surprise: bool
    png: bytes
    text: str
    # Tabular: every feature, most different first, [[name, train value, test value, d], ...]
    # with d = (train value - test value) / the feature's SD over the training set.
    differences: list
    # Compare view only: "both" (in the same list of both methods) or "opposite" (helpful for
    # one method, harmful for the other); absent for the others
    shared: str


class Panel(TypedDict):
    """The selected test point and its k most helpful and k most harmful training points."""

    test_index: int
    label: str  # true class name
    pred: str  # predicted class name
    confidence: float  # probability of the predicted class
    correct: bool  # label == pred
    explanation: str  # what helpful and harmful mean for this point (explorer.explanation)
    # The test point's display field: {"png": ...}, {"text": ...} or, tabular, {"row": [[name,
    # value, z], ...]}, every feature, most unusual first, z = (value - training mean) / SD.
    test: dict
    helpful: list[TrainItem]
    harmful: list[TrainItem]
    # {"helpful" | "harmful": one line on why its "surprise" points score so
    # (influence_tab.surprise_note)}, for the lists that have such points
    notes: dict[str, str]
    method: str  # the name of the attribution method the scores are from (the ``method`` trait)
    # what a score of that method is, and the bar chart's axis title; "" for an Influence (the
    # front end's own words: the predicted change of the test loss if removed)
    score_help: str
    score_axis: str


class MethodInfo(TypedDict):
    """One attribution method of the explorer: an item of the ``methods`` trait
    (``MethodSet.described``)."""

    name: str
    state: Literal["waiting", "preparing", "ready", "error"]
    progress: float  # of its preparation (building, fitting)
    message: str  # what it is doing, "ready in 1.2 s", or why it failed
    description: str  # what it computed (diagnostics.method), once ready
    influence: bool  # an iw.Influence
    reference: bool  # the explorer's reference Influence (Verify's leave-one-out, Attack, Review)
    lds: dict | None  # an LDS given with set_lds: {lds, se, noise_floor, n_test, n_subsets, text}


class CompareColumn(TypedDict):
    """One method's side of the Compare view."""

    name: str
    state: str  # as MethodInfo's; the lists are empty until "ready"
    message: str
    description: str
    lds: list[str]  # its LDS in words: on this test point (Verify's LDS), given (set_lds)
    helpful: list[TrainItem]  # with ``shared`` marks
    harmful: list[TrainItem]
    score_help: str
    score_axis: str


class CompareState(TypedDict, total=False):
    """The ``compare`` trait: two methods' lists for the selected test point ({} before one is
    selected, or with fewer than two methods)."""

    test_index: int
    methods: list[str]  # the two names, left and right
    columns: list[CompareColumn]
    # None until both are ready: {helpful: [training indices in both helpful lists], harmful:
    # [...], opposite: [helpful for one, harmful for the other], k, text: "4 of 8 helpful ..."}
    overlap: dict | None


# ----- the slow tabs: the ``verify`` and ``attack`` traits -------------------------------------
# The Verify tab's checks, the values of the trait ``verify_mode`` and of ``verify["kind"]``:
# "loo" leave-one-out retraining (VerifyState), "lds" the linear datamodeling score (LDSState).
VerifyMode = Literal["loo", "lds"]
VERIFY_MODES: tuple[VerifyMode, ...] = ("loo", "lds")


class JobState(TypedDict, total=False):
    """A background run of one tab; ``state`` is always there, the rest once a run started."""

    state: JobStateName
    test_index: int
    progress: float  # 0..1
    message: str  # what the tab's status line shows


class VerifyState(JobState, total=False):
    """Leave-one-out retraining (``validate_loo``) for the selected test point."""

    kind: VerifyMode  # "loo"
    n_remove: int
    n_removed: int
    pearson: float | None  # None when undefined (fewer than two removals)
    spearman: float | None
    pearson_text: str  # R as the plot's title writes it (plots.correlation_text): "0.9999", "n/a"
    spearman_text: str
    reading: str  # one line: what this R means and whether it is good (verify_tab.loo_reading)
    drift: float
    seconds: float
    method: str  # the Influence checked: the explorer's reference, whichever method is shown


class LDSState(JobState, total=False):
    """The linear datamodeling score (``iw.lds``) of the selected test point, LDS(z), with its
    noise floor: the Verify tab's other check, in the same ``verify`` trait."""

    kind: VerifyMode  # "lds"
    subsets: int  # asked for
    n_subsets: int  # retrained, each twice (fewer than ``subsets`` only when cancelled)
    fraction: float  # of the training set each subset keeps
    output: str  # what f_j(z) is: "margin" or "loss" (LDSResult.output)
    lds: float | None  # None when undefined (fewer than three subsets)
    noise_floor: float | None
    lds_text: str  # as the plot's title writes them (plots.correlation_text): "0.9931", "n/a"
    noise_floor_text: str
    reading: str  # one sentence: what this LDS means against its noise floor
    seconds: float
    method: str  # the attribution method whose scores were checked (all verify states have it)


class AttackItem(TypedDict, total=False):
    """One poisoned training point: PNGs for images, else the features that changed most."""

    index: int
    label: str
    original: bytes
    perturbed: bytes
    difference: bytes
    amplification: float  # how much the difference image is magnified
    difference_bound: float  # the difference image's full colour, +-, in the sliders' units
    changes: list  # [[feature name, before, after], ...]


class AttackState(JobState, total=False):
    """A training-set attack (``craft_attack``) on the selected test point."""

    flipped: bool
    prediction_before: str
    prediction_after: str
    probabilities: list  # [[class name, before, after], ...], top 5
    iterations: int
    max_change: float
    seconds: float
    items: list[AttackItem]
    stopped: str  # AttackResult.stopped: "flipped", "max_iter", "fixed point" or "cancelled"
    stop_reason: str  # AttackResult.stop_reason: why it stopped, in words, and what to try
    n_poison: int  # the settings the result was run with, in the sliders' units
    eps: float
    step: float
    stop_margin: float  # the lead in probability the attack went on for (0: the first flip)
    margin: float  # AttackResult.margin: the largest other class's probability minus the true's
    changes_in_data_units: bool  # a table's changes are in the data set's units (else the inputs)
    search: dict  # after "Find smallest eps": {eps (None: none flipped), tried: [[eps,
    # flipped], ...], stopped, unit}; the outcome shown is the attack at the eps found


# ----- the Review tab: the ``review`` and ``review_retrain`` traits -----------------------------
class ReviewItem(TypedDict, total=False):
    """One training point in the review ranking, with its display field (``png``, ``text`` or
    ``row``, as DisplayData.item) and the fix proposed for it."""

    rank: int  # 1 = the most suspect
    index: int  # training index
    label: str  # the given label's class name
    label_index: int
    pred: str  # the model's predicted class name at theta_hat
    probability: float  # of the predicted class
    score: float | None  # the ranking's score (None for "random")
    proposed: int  # the proposed label's class index, -1 for none
    remove: bool  # marked for removal
    png: bytes
    text: str
    row: list


class ReviewState(JobState, total=False):
    """The ranking (``running`` while it is computed, then ``done``) and one page of it."""

    method: str  # "self_influence", "loss" or "random"
    score_name: str | None  # what the score is: "|self-influence|", "training loss", None
    page: int
    n_pages: int
    n: int  # training points ranked
    items: list[ReviewItem]
    n_relabelled: int  # fixes pending
    n_removed: int


class ReviewOutcome(TypedDict, total=False):
    """What "Retrain with fixes" measured (the one definition of these fields: they are also
    the attributes of ``iw.ReviewResult``): the test set before -> after (None without test
    labels) and the prediction of the test point selected when it started (None when none was)."""

    accuracy_before: float | None
    accuracy_after: float | None
    loss_before: float | None  # mean test loss L(z_test, theta), without the L2 term
    loss_after: float | None
    n_relabelled: int  # the fixes the retrain used
    n_removed: int
    selected: int | None
    prediction_before: str | None  # class names
    prediction_after: str | None
    probability_before: float | None  # of each predicted class
    probability_after: float | None


class ReviewRetrainState(JobState, ReviewOutcome, total=False):
    """ "Retrain with fixes": the job, and once done its :class:`ReviewOutcome` and the code
    that opens an explorer on the retrained model (``hints.retrained_code``)."""

    code: str


IDLE: JobState = {"state": "idle"}


def job_started(index: int, message: str, **extra) -> JobState:
    """The state of a run that has just started for test point ``index``."""
    return {"state": "running", "test_index": index, "progress": 0.0, "message": message, **extra}


def job_failed(index: int, what: str, err: Exception) -> JobState:
    """The state of a run that raised ``err``: "<what> failed: <type>: <message>"."""
    return {
        "state": "error",
        "test_index": index,
        "message": f"{what} failed: {type(err).__name__}: {err}",
    }
