"""iw.score_distributed on a LocalCluster of 2 worker processes gives influence_on_loss's numbers
(float64, 1e-10), for tensors and for a torch Dataset, the whole network and the top layer; the
Zarr score store round-trips and its top() is Influence.top()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import influence_widgets as iw
from tests.conftest import make_mlp

pytest.importorskip("distributed")
pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


class PairDataset(torch.utils.data.Dataset):
    """(x, y) items of two tensors: the training set as a Dataset, pickled to the workers."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        return self.X[i], self.y[i]


@pytest.mark.parametrize(
    "as_dataset, top_only",
    [(False, False), (True, True)],
    ids=["tensors-all_params-jvp", "dataset-top_layer-head"],
)
def test_same_scores_as_influence_on_loss(client, untouched, top_only, as_dataset):
    pb = make_mlp(top_only=top_only)
    train = PairDataset(pb.X, pb.y) if as_dataset else (pb.X, pb.y)
    inf = iw.Influence(
        pb.model, train, l2=pb.l2, params=pb.params, batch_size=7, progress=False
    ).fit()
    with untouched(pb.model, pb.X, pb.y, pb.Xt, pb.yt):
        scores = iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=9)
    assert scores.shape == (len(pb.Xt), len(pb.X))
    assert scores.chunks[1] == (9, 9, 9, 9, 4)  # 40 training points in chunks of 9
    expected = inf.influence_on_loss(pb.Xt, pb.yt).numpy()
    np.testing.assert_allclose(scores.compute(), expected, rtol=0, atol=1e-10)


def test_predicted_classes_without_labels(client):
    pb = make_mlp()
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    scores = iw.score_distributed(inf, pb.Xt, client=client, chunk_size=16)
    expected = inf.influence_on_loss(pb.Xt).numpy()
    np.testing.assert_allclose(scores.compute(), expected, rtol=0, atol=1e-10)


def test_zarr_store_round_trip(client, tmp_path):
    pb = make_mlp()
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    store = iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=16, store=tmp_path)
    assert isinstance(store, iw.ScoreStore)
    reopened = iw.ScoreStore(tmp_path)
    assert (reopened.n_test, reopened.n) == (len(pb.Xt), len(pb.X))
    assert reopened.array.chunks == (1, 16)  # a click reads one test point's row
    expected = inf.influence_on_loss(pb.Xt, pb.yt)
    for t in range(len(pb.Xt)):
        torch.testing.assert_close(reopened.influence_on_loss(t), expected[t], rtol=0, atol=1e-10)
    top = reopened.top(2, k=5)
    want = inf.top(pb.Xt[2:3], pb.yt[2:3], k=5)
    assert torch.equal(top.helpful, want.helpful) and torch.equal(top.harmful, want.harmful)
    torch.testing.assert_close(top.helpful_scores, want.helpful_scores, rtol=0, atol=1e-12)
    assert reopened.array.attrs["n_train"] == len(pb.X)
    reopened.check_matches(inf, pb.Xt, pb.yt)  # the explorer's check: same test points, same n
    for other in [(pb.Xt.flip(0), pb.yt), (pb.Xt, (pb.yt + 1) % 3), (pb.Xt, None)]:
        with pytest.raises(ValueError, match="^scores: the store's rows"):
            reopened.check_matches(inf, *other)
    with pytest.raises(ValueError, match="^scores: the store was scored with n_train=40, "):
        reopened.check_matches(iw.Influence(pb.model, (pb.X[:30], pb.y[:30])), pb.Xt, pb.yt)


def test_default_local_cluster(tmp_path):
    """client=None: a LocalCluster is started, used and closed; the scores stay readable."""
    pb = make_mlp(top_only=True)
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, params=pb.params, progress=False)
    scores = iw.score_distributed(inf, pb.Xt, pb.yt, chunk_size=25, n_workers=1)
    expected = inf.influence_on_loss(pb.Xt, pb.yt).numpy()
    np.testing.assert_allclose(scores.compute(), expected, rtol=0, atol=1e-10)


def test_explorer_reads_its_clicks_from_a_score_store(client, tmp_path, monkeypatch):
    """InfluenceExplorer(..., scores=store): a click is a lookup in the store (Influence.top is
    never called) and shows Influence.top's points; a store of other test points is refused."""
    pb = make_mlp()
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False).fit()
    expected = inf.top(pb.Xt[2:3], pb.yt[2:3], k=3)
    store = iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=16, store=tmp_path)
    ex = iw.InfluenceExplorer(
        inf, x_test=pb.Xt, y_test=pb.yt, kind="tabular", k=3, scores=store, fit_in_background=False
    )

    def no_solve(*args, **kwargs):
        raise AssertionError("the explorer solved instead of reading the store")

    monkeypatch.setattr(inf, "top", no_solve)
    ex.selected = 2
    assert not ex.error
    assert [item["index"] for item in ex.panel["helpful"]] == expected.helpful[0].tolist()
    assert [item["index"] for item in ex.panel["harmful"]] == expected.harmful[0].tolist()
    assert "clicks read from ScoreStore" in ex.message
    with pytest.raises(ValueError, match="^scores: the store's rows were scored for other"):
        iw.InfluenceExplorer(inf, x_test=pb.Xt[1:], y_test=pb.yt[1:], kind="tabular", scores=store)
    with pytest.raises(TypeError, match="^scores: expected an iw.ScoreStore"):
        iw.InfluenceExplorer(inf, x_test=pb.Xt, y_test=pb.yt, kind="tabular", scores=str(tmp_path))


def test_default_chunks_give_every_worker_the_same_share(client):
    """chunk_size=None: equal chunks, a multiple of the worker threads, at most 65,536 points."""
    from influence_widgets.distributed import balanced_chunk_size

    assert balanced_chunk_size(240_000, 2) == 60_000  # 4 chunks: 2 per worker
    assert balanced_chunk_size(240_000, 1) == 60_000  # 65,536 at most: 4 chunks
    assert balanced_chunk_size(1_020_000, 2) == 63_750  # 16 chunks: 8 per worker
    assert balanced_chunk_size(1_000_000, 3) == 55_556  # 18 chunks: 6 per worker
    assert balanced_chunk_size(3, 2) == 1
    pb = make_mlp(top_only=True)
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, params=pb.params, progress=False)
    scores = iw.score_distributed(inf, pb.Xt, pb.yt, client=client)  # 2 workers, 1 thread each
    assert scores.chunks[1] == (10, 10, 10, 10)
    expected = inf.influence_on_loss(pb.Xt, pb.yt).numpy()
    np.testing.assert_allclose(scores.compute(scheduler=client), expected, rtol=0, atol=1e-10)
