r"""Score estimators for an implicit distribution known only through samples.

An implicit distribution q (e.g. a VAE encoder z = g(x, eps)) can be sampled but has no density.
Many uses only need its score grad_z log q(z): the gradient of the entropy
H[q_phi] = -E log q_phi(z), z = g_phi(eps), is

.. math:: \nabla_\phi H = -\mathbb E_\varepsilon\bigl[\nabla_z \log q_\phi(z)^\top\,\partial z/\partial\phi\bigr]

(the term E[d/dphi log q_phi(z)] at fixed z vanishes, see :func:`csm_edu.vae.entropy_surrogate`).
Four estimators of grad_z log q, behind one interface::

    est.fit(samples, y=None)     # learn from samples of q (kernel: remember them; network: train steps)
    est.score(z, y=None)         # estimated JOINT score grad_z log q(z | y) at z
    est.fit_score(samples, y)    # both at once, the score at the samples themselves

Kernel estimators (no training, one linear-algebra problem per sample set) accept a batch of
independent sample sets, shape (B, M, D) (B distributions, M samples each, e.g. M encoder
samples for each of B images), or one set (M, D):

- :class:`SteinGradientEstimator` (Li & Turner, ICLR 2018), RBF kernel with ridge eta;
- :class:`SpectralSteinGradientEstimator` (SSGE, Shi, Sun & Zhu, ICML 2018), Nystrom eigenfunctions.

Network estimators (amortised: one network for all y, trained alongside the model) take rows
(n, D) with a condition y (n, cond_dim):

- :class:`SlicedScoreEstimator`: a score network s(z, y) trained by sliced score matching;
- :class:`CompositeScoreEstimator`: an AR-CSM over z conditioned on y, trained by composite score
  matching; its joint score is assembled from the conditional scores (see its docstring).
"""
import math
from typing import Optional, Sequence

import torch
from torch import nn

from . import checks, objectives, train
from .models.arcsm import ARCSM
from .models.mlp import mlp
from .quadrature import joint_score


def _sample_sets(samples, name="samples") -> torch.Tensor:
    """(M, D) or (B, M, D) float tensor, finite, with M >= 2."""
    x = torch.as_tensor(samples)
    if not x.is_floating_point():
        x = x.float()
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (M, D) (one sample set) or (B, M, D) (B sets), got {tuple(x.shape)}")
    if x.shape[-2] < 2:
        raise ValueError(f"{name} needs at least 2 samples per set (axis -2), got {x.shape[-2]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; clean it first")
    return x


def median_bandwidth_per_set(x: torch.Tensor) -> torch.Tensor:
    """Median heuristic per sample set: median pairwise distance over i < j, shape x.shape[:-2] + (1, 1)."""
    m = x.shape[-2]
    d = torch.cdist(x, x)
    iu = torch.triu_indices(m, m, offset=1, device=x.device)
    med = d[..., iu[0], iu[1]].median(dim=-1).values
    return med.clamp_min(1e-3)[..., None, None]


def _rbf(a, b, h):
    """k(a, b) = exp(-|a - b|^2 / (2 h^2)), batched: (..., N, M)."""
    return torch.exp(-torch.cdist(a, b) ** 2 / (2 * h ** 2))


class ScoreEstimator:
    """The interface: ``fit(samples, y=None)``, ``score(z, y=None)``, ``fit_score(samples, y=None)``.

    ``amortised`` is False for the kernel estimators (samples are sets (M, D) or (B, M, D), refitted
    each time) and True for the networks (rows (n, D) with a condition y, trained step by step).
    """

    name = "estimator"
    amortised = False

    def fit(self, samples, y=None):
        raise NotImplementedError

    def score(self, z, y=None) -> torch.Tensor:
        raise NotImplementedError

    def fit_score(self, samples, y=None) -> torch.Tensor:
        """Fit on ``samples`` and return the estimated score at the same points (detached)."""
        return self.fit(samples, y).score(samples, y).detach()


class _KernelEstimator(ScoreEstimator):
    r"""Shared part of the kernel estimators: bandwidth and optional per-set standardisation.

    An isotropic RBF kernel with one (median) bandwidth cannot follow directions of very different
    spreads: a VAE posterior has active latents with sigma ~ 0.3 and inactive ones with sigma ~ 1,
    the median distance is set by the wide ones and the narrow ones' score (hence their entropy
    gradient) is estimated near zero, so they shrink further. ``standardize`` maps each sample set
    to u = W (z - m) before the kernel sees it and maps the score back, grad_z log q = W^T grad_u log q_u
    (an affine map has a constant Jacobian), m the set's mean and

    - ``False`` (default): W = I, the plain estimator;
    - ``True`` or ``"diagonal"``: W = diag(1 / s), s the per-coordinate standard deviations;
    - ``"full"``: W = C^{-1/2} (inverse Cholesky factor of the set's covariance C, with a small
      ridge on the correlation matrix): also sees a collapse along a *rotated* direction (an implicit encoder can concentrate
      on a lower-dimensional subspace while every coordinate keeps its spread). Needs M > D samples
      per set to be meaningful (C has rank M - 1).

    The estimate is then equivariant to per-coordinate scaling (``"diagonal"``) or to lower-triangular
    affine maps (``"full"``), as the true score is.
    """

    def __init__(self, bandwidth: Optional[float] = None, standardize=False):
        self.bandwidth = None if bandwidth is None else checks.positive(bandwidth, "bandwidth")
        if standardize is True:
            standardize = "diagonal"
        self.standardize = checks.one_of(standardize or "none", "standardize", ("none", "diagonal", "full"))
        self.samples = None

    def _standardize_fit(self, x):
        """With ``standardize``: remember each set's shift m and map W and return W (x - m); else x."""
        if self.standardize == "none":
            return x
        self.shift = x.mean(-2, keepdim=True)
        centred = x - self.shift
        inv_sd = torch.diag_embed(1.0 / centred.std(-2).clamp_min(1e-6))
        if self.standardize == "diagonal":
            self.W = inv_sd
        else:   # W = chol(R + ridge I)^{-1} diag(1/s), R the correlation matrix (the ridge is scale-free)
            scaled = centred @ inv_sd
            corr = scaled.transpose(-1, -2) @ scaled / (x.shape[-2] - 1)
            eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
            chol = torch.linalg.cholesky(corr + 1e-6 * eye)
            self.W = torch.linalg.solve_triangular(chol, inv_sd, upper=False)
        return centred @ self.W.transpose(-1, -2)

    def _to_u(self, z):
        return z if self.standardize == "none" else (z - self.shift) @ self.W.transpose(-1, -2)

    def _from_u(self, score_u):
        return score_u if self.standardize == "none" else score_u @ self.W

    def _h(self, x):
        if self.bandwidth is not None:
            return torch.full(x.shape[:-2] + (1, 1), self.bandwidth, dtype=x.dtype, device=x.device)
        return median_bandwidth_per_set(x)

    def _check_z(self, z):
        if self.samples is None:
            raise ValueError("call fit(samples) before score(z)")
        z = torch.as_tensor(z).to(self.samples)
        if z.dim() != self.samples.dim() or z.shape[-1] != self.samples.shape[-1] or z.shape[:-2] != self.samples.shape[:-2]:
            raise ValueError(f"z must have shape {tuple(self.samples.shape[:-2])} + (N, {self.samples.shape[-1]}) "
                             f"to match the fitted samples {tuple(self.samples.shape)}, got {tuple(z.shape)}")
        return z


class SteinGradientEstimator(_KernelEstimator):
    r"""Stein gradient estimator (Li & Turner 2018) with an RBF kernel and ridge ``eta``.

    Stein's identity with the test functions h_i(z) = k(z, z^i) reads, for q-samples z^1..z^M,
    E_q[h(z) grad log q(z)^T + grad h(z)] = 0. Replacing the expectation by the sample mean:

    .. math:: -K G \approx \langle\nabla, K\rangle,\qquad
              \hat G = -(K + \eta I)^{-1}\langle\nabla, K\rangle,

    with K_ij = k(z^i, z^j), G the (M, D) matrix of scores at the samples and
    <grad, K>_i = sum_m grad_{z^m} k(z^i, z^m) = sum_m K_im (z^i - z^m) / h^2 for the RBF kernel
    k(a, b) = exp(-|a - b|^2 / 2h^2) (bandwidth h: median pairwise distance unless given).
    ``eta`` is relative to the kernel's diagonal (k(z, z) = 1).

    Out of sample (:meth:`score`), a new point z* is added to the set and the system is solved
    again (Li & Turner's extension); by the block inverse of K' + eta I with A = K + eta I,
    b = k(Z, z*), c = 1 + eta - b^T A^{-1} b,

    .. math:: \hat g(z^*) = -\tfrac1c\Bigl[r_* - b^\top A^{-1}\bigl(R + \nabla_{z^*}k(Z, z^*)\bigr)\Bigr],
              \quad r_* = \sum_m \nabla_{z^m} k(z^*, z^m),

    with R = <grad, K>, the bandwidth kept from the fitted set. Cost O(M^3) once, O(M^2) per point.
    """

    name = "Stein"

    def __init__(self, eta: float = 0.1, bandwidth: Optional[float] = None, standardize=False):
        super().__init__(bandwidth, standardize)
        self.eta = checks.positive(eta, "eta")

    def fit(self, samples, y=None):
        x = self._standardize_fit(_sample_sets(samples))
        self.samples, self.h = x, self._h(x)
        K = _rbf(x, x, self.h)
        self.R = (x * K.sum(-1, keepdim=True) - K @ x) / self.h ** 2
        eye = torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
        self.A_inv = torch.linalg.inv(K + self.eta * eye)
        return self

    def fit_score(self, samples, y=None) -> torch.Tensor:
        """In-sample estimate G = -(K + eta I)^{-1} <grad, K> at the samples themselves."""
        self.fit(samples)
        return self._from_u(-(self.A_inv @ self.R))

    def score(self, z, y=None) -> torch.Tensor:
        z = self._to_u(self._check_z(z))
        x, h = self.samples, self.h
        b = _rbf(x, z, h)                                      # (..., M, N): k(z^m, z*_n)
        # grad_{z*} k(z^m, z*) = k (z^m - z*) / h^2;  r_* = sum_m k(z*, z^m)(z* - z^m) / h^2
        grad_star = b[..., None] * (x[..., :, None, :] - z[..., None, :, :]) / h[..., None] ** 2   # (..., M, N, D)
        r_star = (z * b.sum(-2)[..., None] - b.transpose(-1, -2) @ x) / h ** 2                 # (..., N, D)
        a_inv_b = self.A_inv @ b                                                               # (..., M, N)
        c = 1 + self.eta - (b * a_inv_b).sum(-2)                                               # (..., N)
        proj = a_inv_b.transpose(-1, -2) @ self.R + torch.einsum("...mn,...mnd->...nd", a_inv_b, grad_star)
        return self._from_u(-(r_star - proj) / c[..., None])


class SpectralSteinGradientEstimator(_KernelEstimator):
    r"""Spectral Stein gradient estimator (SSGE, Shi, Sun & Zhu 2018), RBF kernel.

    Expand each score component in the eigenfunctions psi_j of the kernel's integral operator
    under q, g_d(z) = sum_j beta_{jd} psi_j(z). Orthonormality of the psi_j and Stein's identity
    give beta_j = -E_q[grad psi_j(z)]. The Nystrom method estimates psi_j from the M samples:
    with K u_j = lambda_j u_j (eigen-pairs of the Gram matrix, largest first),

    .. math:: \hat\psi_j(z) = \frac{\sqrt M}{\lambda_j}\sum_m k(z, z^m) u_{jm},\qquad
              \hat\beta_j = -\frac1M\sum_m \nabla\hat\psi_j(z^m),\qquad
              \hat g(z) = \sum_{j=1}^J \hat\beta_j\hat\psi_j(z).

    J keeps the leading eigenvalues that hold the fraction ``threshold`` of the spectrum's sum
    (or exactly ``n_eigen`` of them). Truncation is the regulariser (small lambda_j are noise).
    It extends to any z (out of sample) by construction.
    """

    name = "SSGE"

    def __init__(self, n_eigen: Optional[int] = None, threshold: float = 0.98, bandwidth: Optional[float] = None,
                 standardize=False):
        super().__init__(bandwidth, standardize)
        self.n_eigen = None if n_eigen is None else checks.positive_int(n_eigen, "n_eigen")
        if not 0 < float(threshold) <= 1:
            raise ValueError(f"threshold must be a fraction in (0, 1], got {threshold}; e.g. 0.98")
        self.threshold = float(threshold)

    def _psi_and_grad(self, z):
        x, h = self.samples, self.h
        k = _rbf(z, x, h)                                                     # (..., N, M)
        psi = k @ self.U * self.scale                                         # (..., N, J)
        # grad_z k(z, z^m) = k (z^m - z) / h^2
        grad_k = k[..., None] * (x[..., None, :, :] - z[..., :, None, :]) / h[..., None] ** 2   # (..., N, M, D)
        grad_psi = torch.einsum("...nmd,...mj->...njd", grad_k, self.U) * self.scale[..., None]
        return psi, grad_psi

    def fit(self, samples, y=None):
        x = self._standardize_fit(_sample_sets(samples))
        m = x.shape[-2]
        self.samples, self.h = x, self._h(x)
        K = _rbf(x, x, self.h).double()
        lam, U = torch.linalg.eigh(K)                                         # ascending
        lam, U = lam.flip(-1).clamp_min(1e-12), U.flip(-1)
        if self.n_eigen is not None:
            keep = torch.arange(m, device=x.device) < min(self.n_eigen, m)
            keep = keep.expand_as(lam)
        else:
            frac = torch.cumsum(lam, -1) / lam.sum(-1, keepdim=True)
            keep = torch.cat([torch.ones_like(frac[..., :1], dtype=torch.bool), frac[..., :-1] < self.threshold], -1)
        self.n_kept = keep.sum(-1)
        self.U = (U * keep[..., None, :]).to(x.dtype)
        self.scale = (math.sqrt(m) / lam * keep).to(x.dtype)[..., None, :]    # (..., 1, M)
        _, grad_psi = self._psi_and_grad(x)
        self.beta = -grad_psi.mean(-3)                                        # (..., J, D)
        return self

    def score(self, z, y=None) -> torch.Tensor:
        z = self._to_u(self._check_z(z))
        psi, _ = self._psi_and_grad(z)
        return self._from_u(psi @ self.beta)


def _as_condition(y, n, cond_dim, device, dtype):
    if cond_dim == 0:
        if y is not None:
            raise ValueError("this estimator was built with cond_dim=0: pass y=None or build it with cond_dim=y.shape[1]")
        return None
    if y is None:
        raise ValueError(f"this estimator is conditional (cond_dim={cond_dim}): pass y of shape (n, {cond_dim})")
    y = checks.as_batch(torch.as_tensor(y).reshape(len(y), -1), "y", dim=cond_dim).to(device=device, dtype=dtype)
    if len(y) != n:
        raise ValueError(f"y must have one row per z row: {n} rows, got {len(y)}")
    return y


class _NetworkEstimator(ScoreEstimator):
    """Shared part: a module, its Adam optimiser (created once, so training continues across calls)."""

    amortised = True

    def __init__(self, module: nn.Module, dim: int, cond_dim: int, lr: float, *, steps_per_fit: int):
        self.module = module
        self.dim = dim
        self.cond_dim = cond_dim
        self.lr = checks.positive(lr, "lr")
        self.steps_per_fit = checks.positive_int(steps_per_fit, "steps_per_fit")
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=self.lr)
        self.generator = torch.Generator().manual_seed(0)
        self.loss_history = []

    def _rows(self, z, y):
        z = checks.as_batch(torch.as_tensor(z), "z", dim=self.dim).detach()
        param = next(self.module.parameters())
        z = z.to(param)
        return z, _as_condition(y, len(z), self.cond_dim, param.device, param.dtype)

    def loss(self, z, y=None) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, samples, y=None, *, steps: Optional[int] = None):
        """``steps`` (default ``steps_per_fit``) full-batch Adam steps of the estimator's loss on (samples, y).

        Runs :func:`csm_edu.train.fit` with the estimator's own optimiser (so its moments carry
        on across calls) at a constant ``lr``; the estimator's generator (seeded 0 at
        construction) drives the loss's noise, a fresh stream per call.
        """
        z, y = self._rows(samples, y)
        steps = self.steps_per_fit if steps is None else checks.positive_int(steps, "steps")
        data = z if y is None else torch.cat([z, y], 1)
        dim = self.dim

        def loss_fn(module, rows):
            return self.loss(rows[:, :dim], None if y is None else rows[:, dim:])
        try:
            run = train.fit(self.module, loss_fn, data, steps=steps, batch_size=None, optimizer=self.optimizer,
                            lr_decay=False, generator=self.generator, progress=False, device=z.device,
                            distributed=False)
        except FloatingPointError as err:
            raise FloatingPointError(f"{self.name} estimator {err} (now lr {self.lr:g})") from None
        self.loss_history.extend(run.loss)
        self.module.train()
        return self


class SlicedScoreEstimator(_NetworkEstimator):
    r"""A score network s(z, y) = MLP([z, y]) trained by sliced score matching (SSM-VR by default).

    Minimises E_{q(z|y)}[1/2 |s|^2 + v^T grad_z(v^T s)] (:func:`csm_edu.objectives.sliced_score_matching`);
    conditioning on y (e.g. the image x for an encoder q(z|x)) makes one network amortise the
    scores of all q(. | y). Its output is the joint score directly.
    """

    name = "SSM"

    def __init__(self, dim: int, *, cond_dim: int = 0, hidden: int = 128, depth: int = 2, lr: float = 1e-3,
                 steps_per_fit: int = 1, n_projections: int = 1, variance_reduction: bool = True):
        dim = checks.positive_int(dim, "dim")
        cond_dim = checks.positive_int(cond_dim, "cond_dim", minimum=0)
        net = mlp([dim + cond_dim] + [checks.positive_int(hidden, "hidden")] * checks.positive_int(depth, "depth") + [dim])
        super().__init__(net, dim, cond_dim, lr, steps_per_fit=steps_per_fit)
        self.n_projections = checks.positive_int(n_projections, "n_projections")
        self.variance_reduction = bool(variance_reduction)

    def _score_fn(self, y):
        if y is None:
            return self.module

        def score_fn(z):   # sliced_score_matching stacks n_projections copies of z
            return self.module(torch.cat([z, y.repeat(len(z) // len(y), 1)], 1))
        return score_fn

    def loss(self, z, y=None):
        return objectives.sliced_score_matching(self._score_fn(y), z, n_projections=self.n_projections,
                                                variance_reduction=self.variance_reduction)

    def score(self, z, y=None) -> torch.Tensor:
        z, y = self._rows(z, y)
        with torch.no_grad():
            return self._score_fn(y)(z)


class CompositeScoreEstimator(_NetworkEstimator):
    r"""An AR-CSM over z conditioned on y, trained by composite score matching; returns the JOINT score.

    The AR-CSM gives the conditional scores s_d = d/dz_d log q(z_d | z_<d, y). The entropy
    gradient needs the joint score. From log q(z|y) = sum_j log q(z_j | z_<j, y),

    .. math:: \frac{\partial}{\partial z_d}\log q(z\mid y) = s_d(z)
              + \sum_{j \succ d}\frac{\partial}{\partial z_d}\log q(z_j\mid z_{<j}, y),

    where j > d in the model's order. The cross terms are derivatives of *normalised* conditional
    log densities with respect to their conditioning variables, which the scores alone do not
    give (dropping them, ``cross_terms=False``, is exact only when the z_d are independent given y).
    Each conditional is written through its context c_j = c_j(z_<j, y) and normalised by 1-D
    quadrature (:mod:`csm_edu.quadrature`, reference point z_j itself):

    .. math:: \log q(z_j \mid z_{<j}) = -\log\int_{lo}^{hi}\exp\Bigl(\int_{z_j}^{t} f(c_j, \tau)\,d\tau\Bigr)dt,

    and autograd differentiates this through c_j only (the head's input z_j is detached), which
    yields exactly the cross terms; the own term s_d comes from the head itself. [lo, hi] is the
    range of the batch in each coordinate widened by ``margin`` batch standard deviations;
    ``n_nodes`` trapezoid nodes per side. Cost: 2 (n_nodes + 1) D head evaluations per row.
    """

    name = "CSM"

    def __init__(self, dim: int, *, cond_dim: int = 0, hidden: int = 128, n_blocks: int = 2, context_dim: int = 16,
                 head_hidden: int = 64, lr: float = 1e-3, steps_per_fit: int = 1, n_nodes: int = 16,
                 margin: float = 2.0, cross_terms: bool = True, order: Optional[Sequence[int]] = None):
        dim = checks.positive_int(dim, "dim")
        cond_dim = checks.positive_int(cond_dim, "cond_dim", minimum=0)
        # head="mlp": lesson 12's shipped VAE checkpoint was trained with it; an estimator never
        # integrates its density, so the local-mean head's tails would buy nothing here
        model = ARCSM(dim, hidden=hidden, n_blocks=n_blocks, context_dim=context_dim, order=order,
                      cond_dim=cond_dim, head_hidden=head_hidden, head="mlp")
        super().__init__(model, dim, cond_dim, lr, steps_per_fit=steps_per_fit)
        self.n_nodes = checks.positive_int(n_nodes, "n_nodes", minimum=2)
        self.margin = checks.positive(margin, "margin")
        self.cross_terms = bool(cross_terms)

    def loss(self, z, y=None):
        return objectives.composite_score_matching(self.module, z, y)

    def score(self, z, y=None) -> torch.Tensor:
        z, y = self._rows(z, y)
        return joint_score_from_conditionals(self.module, z, y=y, n_nodes=self.n_nodes, margin=self.margin, cross_terms=self.cross_terms)


def joint_score_from_conditionals(model, z: torch.Tensor, *, y: Optional[torch.Tensor] = None, n_nodes: int = 16,
                                  margin: float = 2.0, cross_terms: bool = True) -> torch.Tensor:
    r"""Joint score grad_z log q(z | y) of an autoregressive score model (ARCSM interface), detached.

    Own terms s_d from ``model.head``; cross terms by differentiating the quadrature-normalised
    conditionals through the context (see :class:`CompositeScoreEstimator`). Works for any model with
    ``context(z, y)`` and a broadcasting ``head`` (e.g. :class:`csm_edu.models.ExactConditionalScores`,
    which makes it testable against a known joint score).
    """
    z = checks.as_batch(z, "z", dim=model.dim).detach()
    if not cross_terms:
        with torch.no_grad():
            return model.conditional_scores(z, y)
    spread = z.std(0) if len(z) > 1 else torch.ones_like(z[0])
    spread = spread.clamp_min(1e-2) * float(margin)
    return joint_score(model, z, bounds=(z.min(0).values - spread, z.max(0).values + spread), n_nodes=n_nodes, y=y)

