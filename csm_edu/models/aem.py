r"""Autoregressive Energy Machine (AEM, Nash & Durkan, ICML 2019): the likelihood-trained baseline of AR-CSM.

By the chain rule log p(x) = sum_d log p(x_d | x_<d). An AEM writes every conditional as a 1-D
energy-based model

.. math:: p(x_d \mid x_{<d}) = \frac{\exp f(x_d;\, c_d)}{Z_d},\qquad
          Z_d = \int \exp f(t;\, c_d)\,dt,

with a context c_d = g(x_<d) from a :class:`~csm_edu.models.made.ResMADE` and an energy network
f (here the *log unnormalised density*, f = -E). A D-dimensional normaliser is hopeless to
estimate; D one-dimensional ones are not. Each Z_d is estimated by importance sampling from a
proposal q(x_d | x_<d), a mixture of K Gaussians whose parameters come from the same ResMADE:

.. math:: \hat Z_d = \frac1S \sum_{s=1}^S \frac{\exp f(x^{(s)}_d; c_d)}{q(x^{(s)}_d \mid x_{<d})},
          \qquad x^{(s)}_d \sim q(\cdot \mid x_{<d}).

**Bounded energy.** As in the paper's code (``energy_upper_bound = 0``) the network's raw output
r is mapped to f = -softplus(r) <= 0, i.e. the energy E = softplus(r) >= 0, so exp f <= 1: the
unnormalised density is bounded, which keeps the importance weights from exploding.

**Bias (Jensen).** E[Z_hat] = Z (unbiased), but log is concave, so E[log Z_hat] <= log Z: the
estimate of log Z is biased *down* and log p_hat = f - log Z_hat is biased *up*, by about
Var(w / Z) / (2S) for weights w (delta method). The bias shrinks like 1/S and vanishes when q is
exactly proportional to exp f (then every weight equals Z). Reported AEM log-likelihoods are
therefore slightly optimistic; use many samples (``n_importance`` in :meth:`AEM.log_prob`).

**Training** (the paper's recipe). Proposal samples and their log q are detached (stop-gradient),
so the gradient of log Z_hat with respect to f is the self-normalised estimate of E_p[grad f].
The loss is

.. math:: \mathcal L = -\bigl(\alpha\,\overline{\log \hat p_{\mathrm{AEM}}(x)} + \overline{\log q(x)}\bigr),

where the proposal learns by maximum likelihood (its own term; the AEM term reaches it only
through the shared ResMADE) and alpha warms up from 0 to 1 (:class:`AEMLoss`), so the proposal
is sensible before the energy relies on it.

**Sampling** by sampling-importance-resampling (SIR), one dimension at a time: draw S candidates
from q(x_d | x_<d), keep one with probability proportional to its weight exp f / q
(:func:`csm_edu.sampling.sir`). Exact as S -> infinity.
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from .. import distributions as dist
from .made import ResMADE

_HALF_LOG_2PI = 0.5 * dist.LOG_2PI


# ---------------------------------------------------------------- 1-D building blocks (tested)

def importance_log_normaliser(log_unnormalised: torch.Tensor, log_proposal: torch.Tensor) -> torch.Tensor:
    r"""log Z_hat = logsumexp_s(log f(x_s) - log q(x_s)) - log S over the LAST axis (the S samples).

    Both arguments hold values at the same proposal samples x_s ~ q, shape (..., S). Unbiased for
    Z, biased down for log Z (Jensen, see the module docstring); exact when f / q is constant.
    """
    if log_unnormalised.shape != log_proposal.shape:
        raise ValueError(f"log_unnormalised and log_proposal must have the same shape (..., S), "
                         f"got {tuple(log_unnormalised.shape)} and {tuple(log_proposal.shape)}")
    n_samples = log_unnormalised.shape[-1]
    return torch.logsumexp(log_unnormalised - log_proposal, dim=-1) - math.log(n_samples)


def mixture_log_prob(logits: torch.Tensor, means: torch.Tensor, scales: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""log sum_k softmax(logits)_k N(x; means_k, scales_k^2) for a 1-D mixture; params (..., K), x (...)."""
    z = (x.unsqueeze(-1) - means) / scales
    comp = torch.log_softmax(logits, -1) - 0.5 * z ** 2 - torch.log(scales) - _HALF_LOG_2PI
    return torch.logsumexp(comp, -1)


def mixture_sample(logits: torch.Tensor, means: torch.Tensor, scales: torch.Tensor, n: int,
                   *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``n`` draws from each 1-D mixture with params (..., K): shape (..., n)."""
    batch = logits.shape[:-1]
    probs = torch.softmax(logits.detach(), -1).reshape(-1, logits.shape[-1]).cpu()
    k = torch.multinomial(probs, n, replacement=True, generator=generator).to(logits.device)
    k = k.reshape(*batch, n)
    z = torch.randn(k.shape, generator=generator).to(means)
    return torch.gather(means, -1, k) + torch.gather(scales, -1, k) * z


# ---------------------------------------------------------------- the model

class AEMOutput(NamedTuple):
    """What :meth:`AEM.forward` returns (per-row sums over d, and the per-dimension pieces)."""

    log_prob: torch.Tensor            # (n,)   log p_hat(x) = sum_d [f_d(x_d) - log Z_hat_d]
    log_proposal: torch.Tensor        # (n,)   log q(x) = sum_d log q(x_d | x_<d), exact
    log_unnormalised: torch.Tensor    # (n, D) f(x_d; c_d) <= 0
    log_normaliser: torch.Tensor      # (n, D) log Z_hat_d


class AEM(nn.Module):
    r"""Autoregressive Energy Machine: ResMADE contexts, a bounded 1-D energy per dimension, a MoG proposal.

    Parameters: ``dim`` D; ``n_components`` K of the proposal mixture; ``context_dim`` the size of
    each c_d; ``hidden``, ``n_blocks`` size the ResMADE; ``energy_hidden``, ``energy_layers`` size
    the energy MLP f(x_d, c_d) (shared by all d; an MLP on [x_d, c_d] with SiLU, output
    -softplus(r) <= 0); ``n_importance`` S, the importance samples per conditional during training;
    ``min_scale`` the smallest proposal standard deviation; ``order`` the generation order.

    Shapes: x is (n, D); ``context(x)`` returns (c (n, D, C), logits, means, scales (n, D, K)),
    indexed by the variable d; all of c_d, logits_d, ... depend on x_<d only (ResMADE masks).
    """

    def __init__(self, dim: int, *, n_components: int = 10, context_dim: int = 16, hidden: int = 64,
                 n_blocks: int = 2, energy_hidden: int = 64, energy_layers: int = 2, n_importance: int = 20,
                 min_scale: float = 1e-3, order: Optional[Sequence[int]] = None):
        super().__init__()
        self.dim = checks.positive_int(dim, "dim")
        self.n_components = checks.positive_int(n_components, "n_components")
        self.context_dim = checks.positive_int(context_dim, "context_dim")
        self.n_importance = checks.positive_int(n_importance, "n_importance")
        self.min_scale = checks.positive(min_scale, "min_scale")
        energy_hidden = checks.positive_int(energy_hidden, "energy_hidden")
        energy_layers = checks.positive_int(energy_layers, "energy_layers")
        self.backbone = ResMADE(dim, self.context_dim + 3 * self.n_components, hidden=hidden, n_blocks=n_blocks, order=order)
        self.order = self.backbone.order
        # first layer on [x_d, c_d] split as A c_d + a x_d: A c_d is computed once per context and
        # broadcast over the S samples (the same function as one Linear on the concatenation)
        self.energy_context = nn.Linear(self.context_dim, energy_hidden)
        self.energy_x = nn.Parameter(torch.empty(energy_hidden).uniform_(-1.0, 1.0))
        layers = [nn.SiLU()]   # (the paper uses ReLU; SiLU trained faster and more reliably here)
        for _ in range(energy_layers - 1):
            layers += [nn.Linear(energy_hidden, energy_hidden), nn.SiLU()]
        self.energy_net = nn.Sequential(*layers, nn.Linear(energy_hidden, 1))
        with torch.no_grad():  # spread the initial proposal means over [-2, 2] (as MixtureMADE does)
            bias = self.backbone.output_layer.bias.view(self.dim, -1)
            bias[:, self.context_dim + self.n_components: self.context_dim + 2 * self.n_components] = \
                torch.linspace(-2.0, 2.0, self.n_components)

    # -- pieces
    def _check_x(self, x):
        return checks.as_batch(x, "x", dim=self.dim)

    def context(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c, logits, means, scales): energy context (n, D, C) and proposal mixture params (n, D, K)."""
        out = self.backbone(x)
        c, k = self.context_dim, self.n_components
        scales = self.min_scale + F.softplus(out[..., c + 2 * k:])
        return out[..., :c], out[..., c:c + k], out[..., c + k:c + 2 * k], scales

    def log_unnormalised(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r"""f(x_d; c_d) = -softplus(r(x_d, c_d)) <= 0, r an MLP of [x_d, c_d].

        ``context`` (..., C) broadcasts against ``x`` (...), e.g. context (n, D, 1, C) with
        x (n, D, S) for S samples per conditional; returns x's shape.
        """
        h = self.energy_context(context) + x.unsqueeze(-1) * self.energy_x
        return -F.softplus(self.energy_net(h).squeeze(-1))

    def energy(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """E(x_d; c_d) = -f = softplus(r) >= 0 (the paper's energy)."""
        return -self.log_unnormalised(context, x)

    def _log_normaliser(self, c, logits, means, scales, n_importance, generator):
        r"""log Z_hat_d, shape (n, D), from S proposal samples (samples and their log q detached)."""
        samples = mixture_sample(logits, means, scales, n_importance, generator=generator).detach()   # (n, D, S)
        log_q = mixture_log_prob(*(p.unsqueeze(-2) for p in (logits, means, scales)), samples).detach()
        log_f = self.log_unnormalised(c.unsqueeze(-2), samples)
        return importance_log_normaliser(log_f, log_q)

    # -- densities
    def forward(self, x: torch.Tensor, n_importance: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> AEMOutput:
        """All training quantities for a batch (see :class:`AEMOutput`); ``n_importance`` defaults to S."""
        x = self._check_x(x)
        n_importance = self.n_importance if n_importance is None else checks.positive_int(n_importance, "n_importance")
        c, logits, means, scales = self.context(x)
        log_f = self.log_unnormalised(c, x)
        log_z = self._log_normaliser(c, logits, means, scales, n_importance, generator)
        log_q = mixture_log_prob(logits, means, scales, x)
        return AEMOutput((log_f - log_z).sum(1), log_q.sum(1), log_f, log_z)

    def loss(self, x: torch.Tensor, alpha: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        r"""-(alpha * mean log p_hat_AEM(x) + mean log q(x)), the paper's objective (alpha in [0, 1])."""
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        out = self(x, generator=generator)
        return -(alpha * out.log_prob.mean() + out.log_proposal.mean())

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, *, n_importance: int = 1000, chunk_size: Optional[int] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        r"""Importance-sampled log p(x) = sum_d [f(x_d; c_d) - log Z_hat_d], shape (n,), with
        ``n_importance`` S proposal samples per conditional (biased up, ~ 1/S; module docstring).

        For evaluation (no gradients); training uses :meth:`forward` / :meth:`loss`.
        """
        x = self._check_x(x)
        n_importance = checks.positive_int(n_importance, "n_importance")
        if chunk_size is None:
            chunk_size = max(1, 2 ** 18 // (n_importance * self.dim))
        chunk_size = checks.positive_int(chunk_size, "chunk_size")
        return torch.cat([self(chunk, n_importance, generator).log_prob for chunk in torch.split(x, chunk_size)])

    @property
    def proposal(self) -> "AEMProposal":
        """The proposal q alone, as a density model (:class:`AEMProposal`)."""
        return AEMProposal(self)

    @torch.no_grad()
    def proposal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log q(x) of the proposal (itself a MixtureMADE-like autoregressive density), shape (n,)."""
        x = self._check_x(x)
        _, logits, means, scales = self.context(x)
        return mixture_log_prob(logits, means, scales, x).sum(1)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, n_importance: int = 1000,
                       generator: Optional[torch.Generator] = None) -> Tuple[float, float]:
        r"""(mean, standard error) of the importance-sampled log p over the rows of ``x``.

        The standard error is std / sqrt(n) over test points (it also contains the importance
        sampling noise); the Jensen bias (upward, ~ 1/S) is not in it: raise ``n_importance`` to shrink it.
        """
        values = self.log_prob(x, n_importance=n_importance, generator=generator).double()
        if values.numel() < 2:
            return float(values.mean()), float("nan")
        return float(values.mean()), float(values.std() / math.sqrt(values.numel()))

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None, n_proposals: int = 100) -> torch.Tensor:
        r"""n samples by sampling-importance-resampling, one variable at a time in ``order``.

        For each d: S = ``n_proposals`` candidates from q(x_d | x_<d), one kept with probability
        w_s / sum w, w_s = exp f(x_s) / q(x_s) (:func:`csm_edu.sampling.sir`). D ResMADE passes.
        """
        from ..sampling import sir
        n = checks.positive_int(n, "n")
        n_proposals = checks.positive_int(n_proposals, "n_proposals")
        device = next(self.parameters()).device
        x = torch.zeros(n, self.dim, device=device)
        for d in self.order.tolist():
            c, logits, means, scales = (p[:, d] for p in self.context(x))       # (n, C), (n, K) x3
            candidates = mixture_sample(logits, means, scales, n_proposals, generator=generator)      # (n, S)
            log_q = mixture_log_prob(logits.unsqueeze(1), means.unsqueeze(1), scales.unsqueeze(1), candidates)
            log_f = self.log_unnormalised(c.unsqueeze(1), candidates)
            x[:, d] = sir(candidates, log_f - log_q, generator=generator)
        return x

    @torch.no_grad()
    def sample_proposal(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Ancestral samples of the proposal q alone (for comparison with SIR)."""
        n = checks.positive_int(n, "n")
        x = torch.zeros(n, self.dim, device=next(self.parameters()).device)
        for d in self.order.tolist():
            _, logits, means, scales = (p[:, d] for p in self.context(x))
            x[:, d] = mixture_sample(logits, means, scales, 1, generator=generator)[:, 0]
        return x


class AEMProposal:
    r"""The proposal q(x) = prod_d q(x_d | x_<d) of an :class:`AEM` as a density model of its own.

    A view that shares the AEM's parameters (it is not a module and trains nothing): exact
    ``log_prob(x)`` (:meth:`AEM.proposal_log_prob`) and ancestral ``sample(n, generator=...)``
    (:meth:`AEM.sample_proposal`).
    """

    def __init__(self, aem: "AEM"):
        self.aem = aem
        self.dim, self.order = aem.dim, aem.order

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.aem.proposal_log_prob(x)

    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.aem.sample_proposal(n, generator=generator)


def warmup_alpha(step: int, warmup_steps: int) -> float:
    """Linear warm-up of the AEM term: alpha = min(1, step / warmup_steps) (1 at once if warmup_steps = 0)."""
    warmup_steps = checks.positive_int(warmup_steps, "warmup_steps", minimum=0)
    return 1.0 if warmup_steps == 0 else min(1.0, step / warmup_steps)


class AEMLoss:
    r"""``loss_fn(model, batch)`` for :func:`csm_edu.train.fit` with the alpha warm-up.

    Call t (t = 0, 1, ...) returns ``model.loss(batch, alpha_t)`` with
    alpha_t = min(1, t / warmup_steps): alpha rises linearly from 0 to 1 over ``warmup_steps``
    training steps and stays at 1 (the paper's code also offers a hard switch; linear is smoother).
    ``alphas`` records the schedule; one instance per training run.
    """

    def __init__(self, warmup_steps: int = 500):
        self.warmup_steps = checks.positive_int(warmup_steps, "warmup_steps", minimum=0)
        self.step = 0
        self.alphas = []

    def __call__(self, model: AEM, batch: torch.Tensor) -> torch.Tensor:
        alpha = warmup_alpha(self.step, self.warmup_steps)
        self.alphas.append(alpha)
        self.step += 1
        return model.loss(batch, alpha)
