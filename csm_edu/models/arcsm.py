r"""Autoregressive conditional score models (AR-CSM, Meng, Yu, Song, Song & Ermon, NeurIPS 2020).

The maximum-likelihood baselines on the same MADE backbone live in :mod:`csm_edu.models.baselines`.

By the chain rule, log q(x) = sum_d log q(x_d | x_<d). AR-CSM models the D *univariate*
conditional scores

.. math:: s_d(x) = \frac{\partial}{\partial x_d}\log q(x_d \mid x_{<d}),

which need no normaliser, and trains them with composite score matching
(:func:`csm_edu.objectives.composite_score_matching`). Its density is the product of the
conditionals, each normalised on the box [lo, hi] by 1-D quadrature (:meth:`AutoregressiveScoreModel.log_prob`),
and it is sampled one variable at a time (:meth:`AutoregressiveScoreModel.sample`). The network is split into

- a **context** network (the backbone), c_d = g(x_<d, y) in R^{context_dim}; masked (MADE) so it
  cannot see x_d or later variables, and
- a **head** f(c_d, x_d) -> s_d, the only place where x_d enters.

Because the context does not depend on x_d, ds_d/dx_d is the derivative of the head alone, and
all D of them come from ONE extra pass through the head (:meth:`AutoregressiveScoreModel.scores_and_diagonal`:
a backward pass in general; :class:`ARCSM` carries the derivative forward in closed form), where exact
score matching needs D backward passes through the whole network.
"""
import functools
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from .. import distributions as dist
from .. import sampling
from ..quadrature import arcsm_log_prob
from .made import ResMADE, check_order


class AutoregressiveScoreModel(nn.Module):
    r"""Base class: anything with ``context(x, y)`` and a per-dimension ``head(context, x, dims)``.

    Subclasses set ``self.dim``, ``self.order`` (LongTensor, generation order) and implement

    - ``context(x, y=None)`` -> (n, D, C): c_d may depend on y and on x_<d only;
    - ``head(context, x, dims=None)`` -> s of x's shape (..., D'): s[..., k] depends only on
      ``context[..., k, :]`` and ``x[..., k]``, and the head must broadcast over leading
      dimensions (the quadrature calls it with context (n, 1, D, C) and x (n, J, D)). ``dims``
      (a LongTensor of length D') says which variables the last-but-one axis holds when it is not
      all of them (the sampler updates one variable at a time).

    and get :meth:`conditional_scores`, :meth:`scores_and_diagonal`, and the density-model
    interface :meth:`log_prob` / :meth:`sample` for free.

    **Support.** The density is q(x) = prod_d q(x_d | x_<d) with every conditional normalised on
    the interval ``bounds`` = (lo, hi), so q is a proper density on the box [lo, hi]^D;
    ``n_nodes`` is the quadrature's resolution. Both are attributes (defaults (-6, 6) and 256)
    that :meth:`set_support` changes, so that callers can ask ``model.log_prob(x)`` without
    knowing the model's kind; every method also takes them as keyword arguments.
    """

    dim: int
    order: torch.Tensor
    bounds: tuple = (-6.0, 6.0)
    n_nodes: int = 256

    def set_support(self, *, bounds: Optional[Sequence[float]] = None, n_nodes: Optional[int] = None):
        """Set the box ``bounds`` = (lo, hi) the density lives on and the quadrature's ``n_nodes``; returns self."""
        if bounds is not None:
            self.bounds = checks.bounds(bounds)                # (lo, hi), finite, lo < hi
        if n_nodes is not None:
            n_nodes = checks.positive_int(n_nodes, "n_nodes", minimum=4)
            if n_nodes % 2:
                raise ValueError(f"n_nodes must be even (the error estimate halves it), got {n_nodes}; use {n_nodes + 1}")
            self.n_nodes = n_nodes
        return self

    def log_prob(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *, bounds: Optional[Sequence[float]] = None,
                 n_nodes: Optional[int] = None, return_error: bool = False, per_dim: bool = False,
                 chunk_size: Optional[int] = None, tails: bool = True):
        r"""log q(x), shape (n,), by 1-D quadrature of every conditional score on ``bounds``
        (:func:`csm_edu.quadrature.arcsm_log_prob`, whose options these are):

        .. math:: \log q(x_d \mid x_{<d}) = -\log \int_{lo}^{hi} \exp\Bigl(\int_{x_d}^{t} s_d\Bigr) dt.

        ``bounds`` and ``n_nodes`` default to the model's support (:meth:`set_support`);
        ``per_dim=True`` gives the (n, D) log conditionals, ``return_error=True`` also the error estimate
        (with ``tails=True`` it includes the mass the box leaves out; ``tails=False``: the resolution error only).
        """
        return arcsm_log_prob(self, x, bounds=self.bounds if bounds is None else bounds,
                              n_nodes=self.n_nodes if n_nodes is None else n_nodes, return_error=return_error,
                              y=y, per_dim=per_dim, chunk_size=chunk_size, tails=tails)

    def conditional_log_probs(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, **options) -> torch.Tensor:
        """log q(x_d | x_<d) for every d, shape (n, D), by quadrature (:meth:`log_prob` with ``per_dim=True``)."""
        return self.log_prob(x, y, per_dim=True, **options)

    def sample(self, n: int, *, generator: Optional[torch.Generator] = None, y: Optional[torch.Tensor] = None,
               method: str = "inverse_cdf", bounds: Optional[Sequence[float]] = None, **options) -> torch.Tensor:
        """n samples (n, D) of q on ``bounds`` (default: the model's support), one variable at a time in ``order``.

        ``method="inverse_cdf"`` (default): the exact inverse-CDF sampler on a grid
        (:func:`csm_edu.sampling.autoregressive_inverse_cdf`; ``options``: ``n_nodes``, its grid cells).
        ``method="langevin"``: reflected autoregressive Langevin
        (:func:`csm_edu.sampling.autoregressive_langevin`; ``options``: ``steps``, ``step_size``,
        ``sigmas``, ``x0``, ``record_every``).
        """
        method = checks.one_of(method, "method", ("inverse_cdf", "langevin"))
        bounds = self.bounds if bounds is None else bounds
        if method == "inverse_cdf":
            return sampling.autoregressive_inverse_cdf(self, n, bounds=bounds, y=y, generator=generator, **options)
        return sampling.autoregressive_langevin(self, n, bounds=bounds, y=y, generator=generator, **options)

    def context(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def head(self, context: torch.Tensor, x: torch.Tensor, dims: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def _check_x(self, x):
        return checks.as_batch(x, "x", dim=self.dim)

    def conditional_scores(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""s_d(x) = d/dx_d log q(x_d | x_<d) for every d: shape (n, D). Differentiable in x and parameters."""
        x = self._check_x(x)
        return self.head(self.context(x, y), x)

    def scores_and_diagonal(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        r"""(s, diag) with s_d as in :meth:`conditional_scores` and diag_d = ds_d/dx_d, both (n, D).

        The context reads x, the head reads a separate copy x_h of x. Since s_d depends on x_h only
        through its own coordinate x_{h,d},

        .. math:: \frac{\partial}{\partial x_{h,d}} \sum_{d'} s_{d'} = \frac{\partial s_d}{\partial x_d},

        so one backward pass of sum_d s_d with respect to x_h gives the whole diagonal. With
        gradients enabled (training) the graph is kept, so a loss of (s, diag) back-propagates
        into the parameters (and into x and y when they require grad); under ``torch.no_grad()``
        both are returned detached.
        """
        x = self._check_x(x)
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # a leaf copy, or, if x itself needs gradients, a distinct node whose gradient sees
            # the head's use only
            x_head = x.clone() if x.requires_grad else x.detach().requires_grad_(True)
            s = self.head(self.context(x, y), x_head)
            (diag,) = torch.autograd.grad(s.sum(), x_head, create_graph=keep_graph)
        if not keep_graph:
            s, diag = s.detach(), diag.detach()
        return s, diag


HEADS = ("local_mean", "mlp")
LOG_VARIANCE_SPAN = 20.0   # the local-mean head's v lies in (v_max e^{-20}, v_max]: a smooth bound, safe in float32


class ARCSM(AutoregressiveScoreModel):
    r"""AR-CSM: a masked context network (backbone) and a small shared head for the conditional scores.

    Parameters: ``dim`` D; ``hidden``, ``n_blocks``, ``context_dim`` size the default backbone, a
    :class:`~csm_edu.models.made.ResMADE`; ``order`` is the generation order (default 0..D-1);
    ``cond_dim > 0`` conditions every conditional on an extra input y of shape (n, cond_dim)
    (e.g. a VAE encoder's score of q(z | x) with y = x); ``head_hidden`` H is the width of the head.

    **Pluggable backbone.** Pass ``backbone=`` any module with
    ``forward(x, y=None) -> (n, D, context_dim)`` whose output [:, d] depends on x only through
    the variables before d in ``order`` (e.g. a PixelCNN with masked convolutions, flattening
    (C, H, W) to D in raster order); ``context_dim`` must then be its channel count and the
    ``hidden``/``n_blocks`` arguments are unused. ``mean_range`` and ``max_variance`` shape the
    default head (below).

    **Heads.** Both start from h_d = A c_d + e_d in R^H, where e_d is a learned per-dimension
    embedding (it lets the head tell dimensions apart behind a convolutional backbone), and let x_d
    enter only through h_d + a x_d (a in R^H), so h_d is computed once for many x_d (quadrature,
    sampler) and ds_d/dx_d comes in closed form in the same pass (:meth:`scores_and_diagonal`).

    ``head="local_mean"`` (default): the score of a Gaussian whose mean moves with x_d,

    .. math:: s_d = \frac{\mu_d(x_d) - x_d}{v_d},\qquad
              \mu_d(x_d) = m_d + R\tanh\Bigl(\tfrac1R \sum_{j=1}^H w_{dj}\tanh(h_{dj} + a_j x_d)\Bigr),

    with (m_d, v_d, w_d) from the context alone, w_d = G\,\phi(h_d) + g_0 and (\hat m, \hat\ell) = B\,\phi(h_d) + b_0
    (\phi = SiLU),
    m_d = R tanh(\hat m / R) and log v_d = log v_max - softplus(-\hat\ell) (smoothly kept above
    log v_max - ``LOG_VARIANCE_SPAN``), and slopes a_j shared by all
    dimensions. A mixture of Gaussians of one variance v has exactly this form, with \mu(x) the
    responsibility-weighted mean of the components (lesson 06); here \mu_d is any smooth function that
    stays within m_d +- R (R = ``mean_range``, in the data's units) and v_d <= v_max (``max_variance``).
    So beyond 2R every conditional score points back towards the data with slope at most -1/v_max:
    Gaussian tails, normalisable on all of R for any parameters (:meth:`tail_bound` gives the
    envelopes the quadrature's error estimate uses). Its derivative,

    .. math:: \frac{\partial s_d}{\partial x_d} = \frac1{v_d}\Bigl[\bigl(1 - T_d^2\bigr)
              \sum_j w_{dj}\,a_j\bigl(1 - \tanh^2(h_{dj} + a_j x_d)\bigr) - 1\Bigr],
              \qquad T_d = (\mu_d - m_d) / R,

    is elementwise in the H units (no matrix product depends on x_d), so a composite score matching
    step costs little more than a forward and backward pass (:class:`_LocalMeanHeadWithDiagonal`).
    Data far outside [-R, R], or conditionals wider than v_max, need a larger ``mean_range`` /
    ``max_variance`` (or standardised data).

    ``head="mlp"``: one MLP shared by all dimensions, the head of earlier versions of the kit,

    .. math:: s_d = w^\top \phi\bigl(V\phi(h_d + a\,x_d)\bigr) + b;

    ds_d/dx_d is carried forward through both layers (:class:`_SiLUHeadWithDiagonal`), which makes a
    step about 1.7x a forward and backward pass at D = 784, and nothing makes its conditionals decay
    beyond the data (a learned score can point outward there: the density then depends on the box).
    """

    def __init__(self, dim: int, *, hidden: int = 64, n_blocks: int = 2, context_dim: int = 16,
                 order: Optional[Sequence[int]] = None, cond_dim: int = 0, head_hidden: int = 64,
                 backbone: Optional[nn.Module] = None, head: str = "local_mean", mean_range: float = 6.0,
                 max_variance: float = 1.0):
        super().__init__()
        self.dim = checks.positive_int(dim, "dim")
        self.context_dim = checks.positive_int(context_dim, "context_dim")
        self.cond_dim = checks.positive_int(cond_dim, "cond_dim", minimum=0)
        head_hidden = checks.positive_int(head_hidden, "head_hidden")
        self.head_kind = checks.one_of(head, "head", HEADS)
        self.mean_range = float(checks.positive(mean_range, "mean_range"))
        self.log_max_variance = math.log(checks.positive(max_variance, "max_variance"))
        if backbone is None:
            backbone = ResMADE(dim, context_dim, hidden=hidden, n_blocks=n_blocks, order=order, cond_dim=cond_dim)
        self.backbone = backbone
        backbone_order = getattr(backbone, "order", None)
        if backbone_order is not None:
            if order is not None and list(order) != backbone_order.tolist():
                raise ValueError("order differs from the backbone's own order; leave order=None to use the backbone's")
            order = backbone_order.tolist()
        self.register_buffer("order", check_order(order, self.dim))
        self.head_context = nn.Linear(self.context_dim, head_hidden)
        self.head_x = nn.Parameter(torch.empty(head_hidden).uniform_(-1.0, 1.0))
        self.embedding = nn.Parameter(torch.zeros(self.dim, head_hidden))
        if self.head_kind == "mlp":
            self.head_out = nn.Sequential(nn.SiLU(), nn.Linear(head_hidden, head_hidden), nn.SiLU(),
                                          nn.Linear(head_hidden, 1))
            return
        self.head_gate = nn.Linear(head_hidden, head_hidden)   # w_d, the units' amplitudes
        self.head_base = nn.Linear(head_hidden, 2)             # (m-hat, l-hat): the base's centre and variance
        with torch.no_grad():   # start near N(0, v_max / 2) conditionals with small unit amplitudes
            for layer in (self.head_gate, self.head_base):
                layer.weight.mul_(0.1)
                layer.bias.zero_()

    def context(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """c = backbone(x, y), shape (n, D, context_dim); c[:, d] depends on x_<d (and y) only."""
        c = self.backbone(x, y)
        if c.shape != (x.shape[0], self.dim, self.context_dim):
            raise ValueError(f"the backbone must return shape (n, D, context_dim) = "
                             f"({x.shape[0]}, {self.dim}, {self.context_dim}), got {tuple(c.shape)}")
        return c

    def _hidden(self, context: torch.Tensor, dims: Optional[torch.Tensor] = None) -> torch.Tensor:
        """h_d = A c_d + e_d, (..., D', H): everything of the head that does not depend on x_d's value."""
        embedding = self.embedding if dims is None else self.embedding[dims]
        return self.head_context(context) + embedding

    def head_parameters(self, context: torch.Tensor, dims: Optional[torch.Tensor] = None):
        r"""The local-mean head's (h, w, m, log v) from the context alone (class docstring): h and w of
        shape (..., D', H), the centre m and log-variance log v of shape (..., D')."""
        if self.head_kind != "local_mean":
            raise ValueError(f"head_parameters belongs to the local-mean head; this model has head={self.head_kind!r}")
        h = self._hidden(context, dims)
        features = F.silu(h)
        base = self.head_base(features)
        m = self.mean_range * torch.tanh(base[..., 0] / self.mean_range)
        drop = F.softplus(-base[..., 1])
        log_v = self.log_max_variance - LOG_VARIANCE_SPAN * torch.tanh(drop / LOG_VARIANCE_SPAN)
        return h, self.head_gate(features), m, log_v

    def head(self, context: torch.Tensor, x: torch.Tensor, dims: Optional[torch.Tensor] = None) -> torch.Tensor:
        """s[..., k] = f(context[..., k, :], x[..., k]) for variable dims[k] (all D when dims is None)."""
        if self.head_kind == "mlp":
            return self.head_out(torch.addcmul(self._hidden(context, dims), x.unsqueeze(-1), self.head_x)).squeeze(-1)
        h, w, m, log_v = self.head_parameters(context, dims)
        units = torch.tanh(torch.addcmul(h, x.unsqueeze(-1), self.head_x))
        mean = m + self.mean_range * torch.tanh(torch.linalg.vecdot(w, units) / self.mean_range)
        return (mean - x) * torch.exp(-log_v)

    def scores_and_diagonal(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        r"""(s, diag) as in :meth:`AutoregressiveScoreModel.scores_and_diagonal`, with the head's
        derivative along x_d in closed form, in the same pass as s: for the local-mean head the class
        docstring's second formula, from the same tanh values (:class:`_LocalMeanHeadWithDiagonal`);
        for the MLP head carried forward through both layers (:class:`_SiLUHeadWithDiagonal`).

        Same values and gradients as the generic double-backward path (a test checks both in
        float64). A subclass that overrides :meth:`head` gets the generic path.
        """
        if type(self).head is not ARCSM.head:
            return super().scores_and_diagonal(x, y)
        x = self._check_x(x)
        context = self.context(x, y)
        if self.head_kind == "mlp":
            h0 = torch.addcmul(self._hidden(context), x.unsqueeze(-1), self.head_x)
            hidden, out = self.head_out[1], self.head_out[3]
            return _SiLUHeadWithDiagonal.apply(h0, self.head_x, hidden.weight, hidden.bias,
                                              out.weight.view(-1), out.bias.view(()))
        parts = (*self.head_parameters(context), self.head_x, x)
        dtype = functools.reduce(torch.promote_types, (p.dtype for p in parts))   # autocast may mix bf16 and float32
        h, w, m, log_v, a, x_head = (p.to(dtype) for p in parts)
        return _LocalMeanHeadWithDiagonal.apply(h, a, w, m, log_v, x_head, self.mean_range)

    @torch.no_grad()
    def tail_bound(self, context: torch.Tensor, lo, hi, dims: Optional[torch.Tensor] = None):
        r"""Gaussian envelopes of the tails beyond [lo, hi]: (c_lo, c_hi, v), each of shape (..., D');
        None for the MLP head, which has none.

        Each unit tanh(h_j + a_j t) moves monotonically from its value at hi to sign(a_j) as t grows,
        so for t >= hi the sum S(t) <= S_hi = sum_j max(w_j tanh(h_j + a_j hi), w_j sign(a_j)), the
        local mean mu(t) <= c_hi = m + R tanh(S_hi / R), and s_d(t) = (mu(t) - t) / v <= -(t - c_hi) / v;
        for t <= lo likewise with minima, c_lo = m + R tanh(S_lo / R).
        """
        if self.head_kind == "mlp":
            return None
        h, w, m, log_v = self.head_parameters(context, dims)
        far = w * torch.sign(self.head_x)
        s_hi = torch.maximum(w * torch.tanh(h + self.head_x * hi), far).sum(-1)
        s_lo = torch.minimum(w * torch.tanh(h + self.head_x * lo), -far).sum(-1)
        r = self.mean_range
        return m + r * torch.tanh(s_lo / r), m + r * torch.tanh(s_hi / r), log_v.exp()

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conditional_scores(x, y)


class _LocalMeanHeadWithDiagonal(torch.autograd.Function):
    r"""ARCSM's local-mean head and its derivative along x_d in one pass, with the backward written out.

    Inputs: h (..., D, H), the shared slopes a (H,), amplitudes w (..., D, H), the (bounded) centre m
    and log-variance log v (..., D), x (..., D), and the range R (a number). With t_j = tanh(h_j + a_j x),
    q_j = 1 - t_j^2, S = sum_j w_j t_j, T = tanh(S / R), mu = m + R T and lambda = 1/v:

    .. math:: s = \lambda(\mu - x),\qquad
              \delta = \partial s/\partial x = \lambda\bigl((1 - T^2) P - 1\bigr),\quad P = \textstyle\sum_j w_j a_j q_j.

    Backward for upstream gradients (\bar s, \bar\delta): \overline{\log v} = -(\bar s s + \bar\delta\delta),
    \bar m = \lambda\bar s, \bar S = (1 - T^2)(\lambda\bar s - 2\bar\delta\lambda T P / R),
    \bar P = \bar\delta\lambda(1 - T^2); then per unit g_j = q_j w_j(\bar S - 2\bar P a_j t_j) (the gradient
    of the pre-activation h_j + a_j x): \bar h_j = g_j, \bar w_j = \bar S t_j + \bar P a_j q_j,
    \bar a_j = \sum_{rows}(g_j x + \bar P w_j q_j), \bar x = \sum_j g_j a_j - \lambda\bar s.
    Everything is elementwise on (rows, H) plus row sums and products with a. The forward keeps t, q and
    w q (three (rows, H) tensors: the backward then needs five passes over them, plus two matrix-vector
    products, where recomputing q and w q would cost three more). On a
    CPU the rows go in blocks of ``cpu_block_rows`` so that a block's intermediates stay in the cache
    (as in :class:`_SiLUHeadWithDiagonal`); on a GPU the whole tensor is one block. Once
    differentiable (a test compares it with autograd's double backward).
    """

    cpu_block_rows = 4096

    @staticmethod
    def forward(ctx, h, a, w, m, log_v, x, mean_range):
        shape = h.shape
        h, w = h.reshape(-1, shape[-1]), w.reshape(-1, shape[-1])
        m, log_v, x = m.reshape(-1), log_v.reshape(-1), x.reshape(-1)
        n_rows = h.shape[0]
        block = n_rows if h.is_cuda else _LocalMeanHeadWithDiagonal.cpu_block_rows
        one = h.new_ones(())
        t, q, wq = torch.empty_like(h), torch.empty_like(h), torch.empty_like(h)
        S, P = h.new_empty(n_rows), h.new_empty(n_rows)
        for start in range(0, n_rows, block):
            r = slice(start, start + block)
            torch.addcmul(h[r], x[r, None], a, out=t[r]).tanh_()
            torch.linalg.vecdot(w[r], t[r], out=S[r])
            torch.addcmul(one, t[r], t[r], value=-1.0, out=q[r])         # q = 1 - t^2
            torch.mv(torch.mul(w[r], q[r], out=wq[r]), a, out=P[r])      # P = (w q) . a
        T = torch.tanh(S / mean_range)
        precision = torch.exp(-log_v)
        s = (m + mean_range * T - x) * precision
        diag = ((1.0 - T * T) * P - 1.0) * precision
        ctx.save_for_backward(t, q, wq, a, x, T, P, precision, s, diag)
        ctx.mean_range, ctx.shape, ctx.block = mean_range, shape, block
        return s.view(shape[:-1]), diag.view(shape[:-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_s, grad_diag):
        t, q, wq, a, x, T, P, precision, s, diag = ctx.saved_tensors
        grad_s, grad_diag = grad_s.reshape(-1), grad_diag.reshape(-1)
        u = 1.0 - T * T
        grad_log_v = -(grad_s * s + grad_diag * diag)
        grad_m = grad_s * precision
        grad_S = u * precision * (grad_s - 2.0 * grad_diag * T * P / ctx.mean_range)
        grad_P = grad_diag * precision * u
        grad_pre, grad_w = torch.empty_like(t), torch.empty_like(t)
        grad_a = torch.zeros_like(a)
        for start in range(0, t.shape[0], ctx.block):
            r = slice(start, start + ctx.block)
            tr, gS, gP = t[r], grad_S[r, None], grad_P[r, None]
            gpre = torch.mul(tr, a, out=grad_pre[r])
            torch.addcmul(gS, gpre, gP, value=-2.0, out=gpre).mul_(wq[r])         # q w (S-bar - 2 P-bar a t)
            torch.mul(q[r], a, out=grad_w[r]).mul_(gP).addcmul_(tr, gS)           # S-bar t + P-bar a q
            grad_a.addmv_(gpre.t(), x[r]).addmv_(wq[r].t(), grad_P[r])
        grad_x = grad_pre @ a - grad_s * precision if ctx.needs_input_grad[5] else None
        shape = ctx.shape
        return (grad_pre.view(shape), grad_a, grad_w.view(shape), grad_m.view(shape[:-1]),
                grad_log_v.view(shape[:-1]), None if grad_x is None else grad_x.view(shape[:-1]), None)


def _silu_parts_into(h, sig, p, z, g):
    """Write sig = sigmoid(h), p = sig (1 - sig), z = silu(h) = h sig and g = silu'(h) = sig + h p."""
    torch.sigmoid(h, out=sig)
    torch.addcmul(sig, sig, sig, value=-1.0, out=p)
    torch.mul(h, sig, out=z)
    torch.addcmul(sig, h, p, out=g)


class _SiLUHeadWithDiagonal(torch.autograd.Function):
    r"""ARCSM's head and its derivative along x_d in one pass (forward mode), with a hand-written backward.

    With h_0 = A c_d + e_d + a x_d (so dh_0/dx_d = a), \phi = SiLU, h_1 = \phi(h_0), u = W h_1 + b_1:

    .. math::
        s_d = w^\top \phi(u) + b_2,\qquad
        \frac{\partial s_d}{\partial x_d} = w^\top\bigl[\phi'(u)\odot \tau\bigr],\qquad
        \tau = W\bigl[\phi'(h_0)\odot a\bigr] = (W\,\mathrm{diag}(a))\,\phi'(h_0).

    The backward for upstream gradients (\bar s, \bar\delta) of (s, diag) is the chain rule written
    out, with \phi'' = \sigma(1-\sigma)(2 + h - 2\phi):
    \bar\tau = \bar\delta\, w\odot\phi'(u), \bar u = w\odot[\bar s\,\phi'(u) + \bar\delta\,\tau\odot\phi''(u)],
    \bar h_0 = \phi'(h_0)\odot W^\top\bar u + \phi''(h_0)\odot(W\mathrm{diag}(a))^\top\bar\tau, plus the
    weight gradients. Autograd's double backward computes the same numbers op by op on the whole
    (n D, H) activation; here, on a CPU, rows are processed in blocks of ``cpu_block_rows`` so that a
    block's intermediate values stay in the cache (these passes are limited by memory bandwidth), and
    only what the backward needs is kept. On a GPU the whole tensor is one block. Once differentiable.
    """

    cpu_block_rows = 4096

    @staticmethod
    def forward(ctx, h0, a, W, b1, w, b2):
        shape = h0.shape
        h0 = h0.reshape(-1, shape[-1])
        n_rows = h0.shape[0]
        block = n_rows if h0.is_cuda else _SiLUHeadWithDiagonal.cpu_block_rows
        Wa = W * a
        p0, z0, g0, u, p1, z1, g1, tau = (torch.empty_like(h0) for _ in range(8))
        sig = torch.empty_like(h0[:block])           # scratch, one block
        g1_tau = torch.empty_like(h0[:block])
        s = h0.new_empty(n_rows)
        diag = h0.new_empty(n_rows)
        for start in range(0, n_rows, block):
            r = slice(start, start + block)
            m = min(block, n_rows - start)
            _silu_parts_into(h0[r], sig[:m], p0[r], z0[r], g0[r])
            torch.addmm(b1, z0[r], W.t(), out=u[r])
            torch.mm(g0[r], Wa.t(), out=tau[r])
            _silu_parts_into(u[r], sig[:m], p1[r], z1[r], g1[r])
            torch.mul(g1[r], tau[r], out=g1_tau[:m])
            torch.addmv(b2, z1[r], w, out=s[r])
            torch.mv(g1_tau[:m], w, out=diag[r])
        ctx.save_for_backward(h0, p0, z0, g0, u, p1, z1, g1, tau, a, W, Wa, w)
        ctx.shape, ctx.block = shape, block
        return s.view(shape[:-1]), diag.view(shape[:-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_s, grad_diag):
        h0, p0, z0, g0, u, p1, z1, g1, tau, a, W, Wa, w = ctx.saved_tensors
        grad_s, grad_diag = grad_s.reshape(-1), grad_diag.reshape(-1)
        grad_h0 = torch.empty_like(h0)
        grad_w = z1.t() @ grad_s
        grad_W, grad_Wa, grad_b1 = torch.zeros_like(W), torch.zeros_like(W), torch.zeros_like(w)
        for start in range(0, h0.shape[0], ctx.block):
            r = slice(start, start + ctx.block)
            grad_w.addmv_((g1[r] * tau[r]).t(), grad_diag[r])
            grad_diag_w = torch.outer(grad_diag[r], w)
            grad_tau = g1[r] * grad_diag_w
            # grad_u = w * (grad_s phi'(u) + grad_diag tau phi''(u))
            grad_u = torch.add(u[r], z1[r], alpha=-2.0).add_(2.0).mul_(p1[r]).mul_(tau[r]).mul_(grad_diag_w)
            grad_u.addcmul_(g1[r], torch.outer(grad_s[r], w))
            grad_Wa.addmm_(grad_tau.t(), g0[r])
            grad_W.addmm_(grad_u.t(), z0[r])
            grad_b1 += grad_u.sum(0)
            # grad_h0 = phi''(h0) * (grad_tau Wa) + phi'(h0) * (grad_u W)
            torch.add(h0[r], z0[r], alpha=-2.0, out=grad_h0[r])
            grad_h0[r].add_(2.0).mul_(p0[r]).mul_(grad_tau @ Wa).addcmul_(grad_u @ W, g0[r])
        grad_a = (grad_Wa * W).sum(0)
        grad_W += grad_Wa * a
        return grad_h0.view(ctx.shape), grad_a, grad_W, grad_b1, grad_w, grad_s.sum()


# ---- exact conditionals of the analytic targets (for tests, metrics and the lesson's widget) ----

def _as_mixture(target) -> dist.GaussianMixture:
    if isinstance(target, dist.GaussianMixture):
        return target
    if isinstance(target, dist.Gaussian):
        return dist.GaussianMixture(target.mean[None].double(), target.cov[None].double())
    raise ValueError(f"target must be a csm_edu.distributions.Gaussian or GaussianMixture, got {type(target).__name__}")


def marginal(target, dims: Sequence[int]) -> dist.GaussianMixture:
    """The exact marginal of a Gaussian (mixture) over the variables ``dims`` (a mixture of the sub-blocks)."""
    mix = _as_mixture(target)
    idx = torch.as_tensor(list(dims), dtype=torch.long)
    covs = torch.stack([c.cov.double()[idx][:, idx] for c in mix.components])
    return dist.GaussianMixture(mix.means.double()[:, idx], covs, mix.weights.double())


def target_conditional_log_probs(target, x: torch.Tensor, order: Optional[Sequence[int]] = None) -> torch.Tensor:
    r"""Exact log p(x_d | x_<d) = log p(x_{<=d}) - log p(x_{<d}) of a Gaussian (mixture): shape (n, D)."""
    mix = _as_mixture(target)
    x = checks.as_batch(x, "x", dim=mix.dim)
    order = check_order(order, mix.dim).tolist()
    out = torch.zeros_like(x)
    previous = torch.zeros(x.shape[0], dtype=x.dtype)
    for k, d in enumerate(order):
        joint = marginal(mix, order[: k + 1]).log_prob(x[:, order[: k + 1]])
        out[:, d] = joint - previous
        previous = joint
    return out


def target_conditional_scores(target, x: torch.Tensor, order: Optional[Sequence[int]] = None) -> torch.Tensor:
    r"""Exact conditional scores d/dx_d log p(x_d | x_<d) = d/dx_d log p(x_{<=d}) of a Gaussian (mixture): (n, D)."""
    mix = _as_mixture(target)
    x = checks.as_batch(x, "x", dim=mix.dim)
    order = check_order(order, mix.dim).tolist()
    out = torch.zeros_like(x)
    for k, d in enumerate(order):
        out[:, d] = marginal(mix, order[: k + 1]).score(x[:, order[: k + 1]])[:, -1]
    return out


class ExactConditionalScores(AutoregressiveScoreModel):
    r"""The exact conditional scores of a Gaussian (mixture) target, as an autoregressive score model.

    s_d = d/dx_d log p(x_{<=d}) with the exact marginal p(x_{<=d}) (:func:`marginal`). It has
    the ARCSM interface (c_d = x with the variables from d on zeroed; the head reads x_<d from c_d),
    so the quadrature, the sampler and the lesson can run on the truth: a reference that isolates
    their own errors from the model's.
    """

    def __init__(self, target, order: Optional[Sequence[int]] = None):
        super().__init__()
        self.target = _as_mixture(target)
        self.dim = self.target.dim
        self.register_buffer("order", check_order(order, self.dim))
        pos = torch.empty_like(self.order)
        pos[self.order] = torch.arange(self.dim)
        self.register_buffer("position", pos)
        self.marginals = [marginal(self.target, self.order[: k + 1].tolist()) for k in range(self.dim)]

    def context(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        before = (self.position[None, :] < self.position[:, None]).to(x)           # [d, j]: j before d
        return x[:, None, :] * before

    def head(self, context: torch.Tensor, x: torch.Tensor, dims: Optional[torch.Tensor] = None) -> torch.Tensor:
        dims = torch.arange(self.dim) if dims is None else torch.as_tensor(dims).flatten()
        shape = torch.broadcast_shapes(context.shape[:-1], x.shape)
        out = []
        for k, d in enumerate(dims.tolist()):
            k_pos = int(self.position[d])
            prefix = context[..., k, self.order[:k_pos]].expand(*shape[:-1], k_pos)
            z = torch.cat([prefix, x[..., k:k + 1].expand(*shape[:-1], 1)], -1)
            s = self.marginals[k_pos].score(z.reshape(-1, k_pos + 1))[:, -1]
            out.append(s.reshape(shape[:-1]))
        return torch.stack(out, -1)
