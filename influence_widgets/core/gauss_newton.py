"""The generalised Gauss-Newton matrix of the risk: its products and the matrix itself.

    G = (1/n) sum_i J_i^T Lambda_i J_i      (HessianOperator adds l2 I and damping I)

with o_i the model's output for z_i (flattened to C values), J_i = d o_i / d theta (C x p) and
Lambda_i = Hess_o L(o_i, y_i) (C x C) the loss's exact Hessian in the outputs: no sampled labels,
no empirical Fisher. Negative eigenvalues of Lambda_i, which a loss convex in the outputs
(cross-entropy, mse, the smooth hinge) does not have, are set to 0, as EK-FAC does, so that
Lambda_i = S_i S_i^T and G is positive semi-definite by construction: G + l2 I is positive definite
for any l2 > 0, wherever theta_hat is. The exact Hessian is

    H = G + (1/n) sum_i sum_c (dL/do_ic) Hess_theta o_ic    (+ l2 I),

so G = H exactly where the outputs are linear in theta (a linear model, or theta = the final Linear
layer) and the loss is convex in them; elsewhere G drops the curvature of the network itself, the
part that makes H indefinite away from a minimum (Martens 2020; EK-FAC, Kronfluence and TRAK use
G; Bae et al. 2022 show damped-G influence approximates the proximal response).

Products G V are Jacobian-vector products: J_i v forward-mode (``jvp``), S_i S_i^T in the outputs,
J_i^T w reverse-mode (``vjp``), vmapped over the columns of V and summed over a batch; no p x p
matrix. The dense G (for the direct solver, which holds the p x p H anyway) is the sum of
M_i^T M_i over the rows M_i = S_i^T J_i, from per-sample ``vjp``s, a bounded batch at a time.
"""

from __future__ import annotations

import torch
from torch.func import hessian, jvp, vjp, vmap

from influence_widgets.core.objective import Objective, TrainingSet
from influence_widgets.core.progress import progress_bar

__all__ = [
    "GN_ROW_ELEMENTS",
    "gauss_newton_dense",
    "gauss_newton_product",
    "gauss_newton_rows",
    "output_hessian_factor",
    "psd_factor",
]

# Elements of the rows M_i = S_i^T J_i (C x p per sample) held at once while assembling G.
GN_ROW_ELEMENTS = 2**23


def psd_factor(Lam: torch.Tensor) -> torch.Tensor:
    """S with S S^T the positive semi-definite part of each symmetric(ised) Lam (B, C, C):
    S = U diag(max(lambda, 0))^1/2 from Lam = U diag(lambda) U^T, (B, C, C). Half-precision
    matrices are decomposed in float32 (torch has no half-precision eigh)."""
    dtype = Lam.dtype
    work = Lam.float() if dtype in (torch.float16, torch.bfloat16) else Lam
    lam, U = torch.linalg.eigh(0.5 * (work + work.transpose(1, 2)))
    return (U * lam.clamp_min(0).sqrt()[:, None, :]).to(dtype)


def output_hessian_factor(obj: Objective, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """S_i with S_i S_i^T = Lambda_i = Hess_o L(o_i, y_i), negative eigenvalues set to 0, for the
    outputs ``output`` (B, ...) of a batch (flattened to C values each) and its cast targets:
    (B, C, C)."""
    shape = output.shape[1:]

    def one(o: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return obj.loss_fn(o.reshape(1, *shape), target.unsqueeze(0))[0]

    with obj.lock:  # hessian is forward-over-reverse (objective.FUNCTORCH_LOCK)
        Lam = vmap(hessian(one))(output.reshape(output.shape[0], -1), y)
    return psd_factor(Lam)


def gauss_newton_product(
    obj: Objective, x: torch.Tensor, y: torch.Tensor, V: torch.Tensor
) -> torch.Tensor:
    """sum over a cast batch of J_i^T Lambda_i J_i v for each column v of V: (p, m) -> (p, m).

    One forward pass with its ``vjp``, one ``jvp`` per column (vmapped), never a Jacobian."""
    theta = obj.theta

    def outputs(th: torch.Tensor) -> torch.Tensor:
        return obj.forward(th, x)

    with obj.lock:  # forward-mode AD: one thread at a time (objective.FUNCTORCH_LOCK)
        out, pullback = vjp(outputs, theta)
        S = output_hessian_factor(obj, out, y)
        JV = vmap(lambda v: jvp(outputs, (theta,), (v,))[1])(V.T)  # (m, B, ...) = J_i v
        W = torch.einsum("bck,mbc->mbk", S, JV.reshape(V.shape[1], len(x), -1))
        W = torch.einsum("bck,mbk->mbc", S, W)  # Lambda_i J_i v
        return vmap(pullback)(W.reshape(V.shape[1], *out.shape))[0].T


def gauss_newton_rows(obj: Objective, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """M_i = S_i^T J_i for each point of a cast batch, (B, C, p), so that
    sum_i M_i^T M_i = sum_i J_i^T Lambda_i J_i: row k of M_i is the gradient of o_i^T S_i[:, k]."""
    theta = obj.theta
    with torch.no_grad():
        S = output_hessian_factor(obj, obj.forward(theta, x), y)

    def rows(x1: torch.Tensor, S1: torch.Tensor) -> torch.Tensor:
        _, pullback = vjp(lambda th: obj.forward(th, x1.unsqueeze(0)).reshape(-1), theta)
        return vmap(pullback)(S1.T)[0]

    with obj.lock:
        return vmap(rows)(x, S)


def gauss_newton_dense(
    obj: Objective, train: TrainingSet, batch_size: int, progress: bool = True
) -> torch.Tensor:
    """G's data term (1/n) sum_i J_i^T Lambda_i J_i as a symmetric (p, p) matrix, in batches of
    at most ``batch_size`` points whose rows M_i (C x p each) fit GN_ROW_ELEMENTS."""
    p = obj.n_params
    x0, _ = train.take([0])
    with torch.no_grad():
        n_out = obj.forward(obj.theta, obj.cast_inputs(x0)).numel()
    batch = max(1, min(batch_size, GN_ROW_ELEMENTS // (n_out * p)))
    G = torch.zeros(p, p, dtype=obj.dtype, device=obj.device)
    bar = progress_bar(total=train.n, desc="Gauss-Newton matrix", disable=not progress)
    for x, y, _ in train.batches(batch):
        M = gauss_newton_rows(obj, obj.cast_inputs(x), obj.cast_targets(y)).reshape(-1, p)
        G.addmm_(M.T, M)
        bar.update(len(x))
    bar.close()
    return G / train.n
