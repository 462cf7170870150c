r"""Variational auto-encoders with Gaussian and implicit encoders (the SSM / AR-CSM VAE experiment).

Model: prior p(z) = N(0, I_L), decoder p_theta(x | z) (:class:`Decoder`: Bernoulli on binary
pixels, or Gaussian with one learned standard deviation), encoder q_phi(z | x). Training
maximises the ELBO

.. math:: \mathcal L(x) = \mathbb E_{q_\phi(z|x)}\bigl[\log p_\theta(x|z) + \log p(z)\bigr] + H[q_\phi(\cdot|x)]
          \le \log p_\theta(x).

- :class:`GaussianEncoder` (reference): q = N(mu(x), diag sigma(x)^2); the entropy is closed form
  (:func:`gaussian_elbo`).
- :class:`ImplicitEncoder`: z = g_phi(x, eps), eps ~ N(0, I), noise concatenated to the input of
  an MLP. q has no density; the entropy's gradient uses the encoder's score from a
  :mod:`csm_edu.score_estimators` estimator fitted to the encoder's samples
  (:func:`entropy_surrogate`, :func:`implicit_elbo_surrogate`).

Evaluation: :func:`importance_log_likelihood`, an importance-sampling estimate of log p_theta(x)
with a Gaussian proposal fitted to encoder samples of each x (stated there), the same for every
encoder, so the table compares decoders.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from . import checks, train
from .distributions import LOG_2PI
from .models.mlp import mlp
from .score_estimators import ScoreEstimator



# ----------------------------------------------------------------------------- data

def binarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Flatten images to (n, D) and threshold them: 1.0 where the pixel is > ``threshold``, else 0.0."""
    x = torch.as_tensor(x)
    return (x.reshape(len(x), -1) > float(threshold)).float()


def load_binary_images(name: str = "digits", split: str = "train", n: Optional[int] = None) -> torch.Tensor:
    """Binarised images, (n, D) in {0, 1}: ``"digits"`` (8x8, D = 64; pixel k/16 > 0.5, i.e. k >= 9) or
    ``"mnist"`` (28x28, D = 784; k/255 > 0.5; the committed subset unless the full set was downloaded).

    Splits: digits ``train`` (1438) / ``test`` (359); MNIST ``train`` / ``valid`` / ``test``.
    Deterministic thresholding (no stochastic binarisation), so the data are fixed.
    """
    from .data import image_data

    checks.one_of(name, "name", ("digits", "mnist"))
    if name == "digits":
        x, _ = image_data.load_digits(split, dequantize=False, n=n)
    else:
        x, _ = image_data.load_mnist(split, n=n, dequantize=False)
    return binarize(x)


def independent_bernoulli_log_likelihood(x_train: torch.Tensor, x_test: torch.Tensor, alpha: float = 1.0) -> float:
    r"""Baseline: every pixel an independent Bernoulli with the training frequency (add-``alpha`` smoothing),
    p_d = (sum_i x_id + alpha) / (n + 2 alpha). Returns the mean test log-likelihood in nats per image."""
    x_train = checks.as_batch(x_train, "x_train")
    x_test = checks.as_batch(x_test, "x_test", dim=x_train.shape[1])
    p = (x_train.sum(0) + alpha) / (len(x_train) + 2 * alpha)
    return float((x_test * p.log() + (1 - x_test) * (1 - p).log()).sum(1).mean())


# ----------------------------------------------------------------------------- networks

def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * (z ** 2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


class Decoder(nn.Module):
    r"""p_theta(x | z): an MLP from z to one parameter per pixel.

    - ``likelihood="bernoulli"`` (binary x): log p = sum_d [x_d log sigma(l_d) + (1 - x_d) log sigma(-l_d)],
      l = MLP(z) the logits;
    - ``likelihood="gaussian"``: log p = sum_d log N(x_d; m_d, sigma^2), m = MLP(z), one learned
      log sigma (``log_std``) shared by all pixels.

    ``hidden=()`` makes the map linear (a linear-Gaussian model: marginal p(x) = N(b, W W^T + sigma^2 I)).
    """

    def __init__(self, latent_dim: int, data_dim: int, *, hidden: Sequence[int] = (256, 256),
                 likelihood: str = "bernoulli", log_std: float = 0.0):
        super().__init__()
        self.latent_dim = checks.positive_int(latent_dim, "latent_dim")
        self.data_dim = checks.positive_int(data_dim, "data_dim")
        self.likelihood = checks.one_of(likelihood, "likelihood", ("bernoulli", "gaussian"))
        self.net = mlp([self.latent_dim] + [checks.positive_int(h, "hidden") for h in hidden] + [self.data_dim])
        if self.likelihood == "gaussian":
            self.log_std = nn.Parameter(torch.tensor(float(log_std)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (Bernoulli) or means (Gaussian), shape z.shape[:-1] + (D,)."""
        return self.net(z)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for x (B, D) and z (B, L) or (B, K, L): shape (B,) or (B, K)."""
        out = self(z)
        if z.dim() == 3:
            x = x[:, None, :]
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        return (-0.5 * ((x - out) / self.log_std.exp()) ** 2 - self.log_std - 0.5 * LOG_2PI).sum(-1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z]: pixel probabilities (Bernoulli) or means (Gaussian)."""
        out = self(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out


class GaussianEncoder(nn.Module):
    """q_phi(z | x) = N(mu(x), diag exp(2 log_sigma(x))), one MLP giving (mu, log_sigma)."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.data_dim = checks.positive_int(data_dim, "data_dim")
        self.latent_dim = checks.positive_int(latent_dim, "latent_dim")
        self.net = mlp([self.data_dim] + [checks.positive_int(h, "hidden") for h in hidden] + [2 * self.latent_dim])

    def params(self, x):
        mean, log_std = self.net(x).chunk(2, -1)
        return mean, log_std.clamp(-8.0, 4.0)

    def sample(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """Reparameterised z = mu + sigma * eps, shape (B, n_samples, L)."""
        mean, log_std = self.params(x)
        eps = torch.randn(len(x), checks.positive_int(n_samples, "n_samples"), self.latent_dim, device=x.device)
        return mean[:, None] + log_std.exp()[:, None] * eps

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log q(z | x) for z (B, K, L): shape (B, K)."""
        mean, log_std = self.params(x)
        u = (z - mean[:, None]) / log_std.exp()[:, None]
        return (-0.5 * u ** 2 - log_std[:, None] - 0.5 * LOG_2PI).sum(-1)

    def entropy(self, x: torch.Tensor) -> torch.Tensor:
        """H[q(. | x)] = sum_l (log sigma_l + 1/2 log(2 pi e)), shape (B,)."""
        _, log_std = self.params(x)
        return (log_std + 0.5 * (LOG_2PI + 1)).sum(-1)


class ImplicitEncoder(nn.Module):
    r"""z = g_phi(x, eps) = MLP([x, eps]), eps ~ N(0, I_noise_dim): a sampler with no density.

    ``noise_skip=True`` adds a learned linear path from the noise, z = MLP([x, eps]) + B eps, B
    initialised to the identity (first min(noise, latent) coordinates): q(z|x) then starts with a
    full-rank unit spread, like a Gaussian encoder at initialisation, instead of the near-point
    (sd ~ 0.01-0.06, rank-deficient) spread of the plain MLP (``noise_skip=False``, the default).
    A network score estimator that starts behind a near-point q (score ~ 1/sd^2) under-estimates
    it, the entropy gradient is too weak, and the encoder stays collapsed in some directions. The
    kernel estimators go the other way: whitening by a small sample's covariance over-estimates the
    score in its small directions, and a q started wide stays too wide (lesson 12 shows both
    measurements). Still implicit (no density).
    :func:`csm_edu.experiments.vae_study.run_vae_experiment` therefore gives the skip to the SSM / CSM
    encoders only (its ``noise_skip="networks"``; the measurements behind it are in its docstring).
    The same SSM network training a *Gaussian* encoder (which starts at unit spread) gets -17.2 at
    L = 32, as good as that encoder's exact entropy (-17.3): the estimator is not the problem.
    """

    def __init__(self, data_dim: int, latent_dim: int, *, noise_dim: Optional[int] = None,
                 hidden: Sequence[int] = (256, 256), noise_skip: bool = False):
        super().__init__()
        self.data_dim = checks.positive_int(data_dim, "data_dim")
        self.latent_dim = checks.positive_int(latent_dim, "latent_dim")
        self.noise_dim = checks.positive_int(noise_dim if noise_dim is not None else latent_dim, "noise_dim")
        self.net = mlp([self.data_dim + self.noise_dim] + [checks.positive_int(h, "hidden") for h in hidden]
                       + [self.latent_dim])
        self.skip = None
        if noise_skip:
            self.skip = nn.Linear(self.noise_dim, self.latent_dim, bias=False)
            with torch.no_grad():
                self.skip.weight.copy_(torch.eye(self.latent_dim, self.noise_dim))

    def sample(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """z = g(x, eps) for n_samples independent eps per row: shape (B, n_samples, L)."""
        m = checks.positive_int(n_samples, "n_samples")
        eps = torch.randn(len(x), m, self.noise_dim, device=x.device)
        z = self.net(torch.cat([x[:, None, :].expand(-1, m, -1), eps], -1))
        return z if self.skip is None else z + self.skip(eps)


class VAE(nn.Module):
    """An encoder (Gaussian or implicit) and a :class:`Decoder`; ``kind`` is ``"gaussian"`` or ``"implicit"``."""

    def __init__(self, encoder: nn.Module, decoder: Decoder):
        super().__init__()
        if encoder.latent_dim != decoder.latent_dim or encoder.data_dim != decoder.data_dim:
            raise ValueError("encoder and decoder must agree on latent_dim and data_dim")
        self.encoder, self.decoder = encoder, decoder
        self.kind = "gaussian" if isinstance(encoder, GaussianEncoder) else "implicit"

    @property
    def latent_dim(self):
        return self.decoder.latent_dim

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) + log p(z) for z (B, K, L): shape (B, K)."""
        return self.decoder.log_prob(x, z) + log_standard_normal(z)

    @torch.no_grad()
    def generate(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """E[x | z] for n prior draws z ~ N(0, I) (the decoded 'mean' images), shape (n, D)."""
        z = torch.randn(checks.positive_int(n, "n"), self.latent_dim, generator=generator)
        return self.decoder.mean(z.to(next(self.parameters()).device)).cpu()


def make_vae(encoder: str, data_dim: int, latent_dim: int, *, hidden: Sequence[int] = (256, 256),
             likelihood: str = "bernoulli", noise_dim: Optional[int] = None, noise_skip: bool = False) -> VAE:
    """A VAE with a ``"gaussian"`` or ``"implicit"`` encoder and a decoder of the same widths
    (``noise_skip``: see :class:`ImplicitEncoder`)."""
    checks.one_of(encoder, "encoder", ("gaussian", "implicit"))
    enc = (GaussianEncoder(data_dim, latent_dim, hidden) if encoder == "gaussian"
           else ImplicitEncoder(data_dim, latent_dim, noise_dim=noise_dim, hidden=hidden, noise_skip=noise_skip))
    return VAE(enc, Decoder(latent_dim, data_dim, hidden=tuple(reversed(list(hidden))), likelihood=likelihood))


# ----------------------------------------------------------------------------- objectives

def gaussian_elbo(vae: VAE, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
    r"""ELBO of a Gaussian-encoder VAE per row, shape (B,): Monte-Carlo expected log-joint + exact entropy,

    .. math:: \frac1M\sum_m \bigl[\log p(x|z_m) + \log p(z_m)\bigr] + H[q(\cdot|x)],\quad z_m = \mu + \sigma\varepsilon_m,

    unbiased for the ELBO and differentiable (reparameterisation)."""
    if vae.kind != "gaussian":
        raise ValueError("gaussian_elbo needs a VAE with a GaussianEncoder; use implicit_elbo_surrogate otherwise")
    z = vae.encoder.sample(x, n_samples)
    return vae.log_joint(x, z).mean(1) + vae.encoder.entropy(x)


def entropy_surrogate(z: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    r"""A surrogate whose gradient is the entropy gradient: -mean_m score_m^T z_m (score detached), shape z.shape[:-2] or ().

    With z = g_phi(x, eps) and H = -E_eps[log q_phi(g_phi(x, eps) | x)], the chain rule gives

    .. math:: \nabla_\phi H = -\mathbb E\bigl[\nabla_z\log q_\phi(z|x)^\top \partial_\phi z\bigr]
              - \mathbb E_{q_\phi}\bigl[\nabla_\phi \log q_\phi(z|x)\bigr]_{z\ \mathrm{fixed}},

    and the second term is 0 (E_q[grad log q] = grad of the integral of q = grad 1). So for
    ``score`` = grad_z log q(z|x) held constant, -score^T z has gradient nabla_phi H. Its *value* is
    not the entropy: only its gradient is meaningful. z has shape (..., M, L), one row per sample.
    """
    if z.shape != score.shape:
        raise ValueError(f"score must have the shape of z {tuple(z.shape)}, got {tuple(score.shape)}")
    return -(score.detach() * z).sum(-1).mean(-1)


def estimate_encoder_score(estimator: ScoreEstimator, z: torch.Tensor, x: torch.Tensor, fit: bool = True) -> torch.Tensor:
    """The estimated score grad_z log q(z | x) at encoder samples z (B, M, L), detached.

    Kernel estimators (Stein, SSGE) treat each row's M samples as one set; network estimators
    (SSM, CSM) see the B M rows with the condition y = x (repeated), and with ``fit=True`` first
    take their ``steps_per_fit`` training steps on these samples (training alongside the VAE).
    """
    z = z.detach()
    if not estimator.amortised:
        return estimator.fit_score(z)
    b, m, latent = z.shape
    rows = z.reshape(b * m, latent)
    y = x[:, None, :].expand(-1, m, -1).reshape(b * m, -1).detach()
    if fit:
        estimator.fit(rows, y)
    return estimator.score(rows, y).reshape(b, m, latent)


def implicit_elbo_surrogate(vae: VAE, x: torch.Tensor, estimator: ScoreEstimator, *, n_samples: int = 8,
                            fit: bool = True):
    r"""(surrogate per row (B,), expected log-joint per row (B,)) for an implicit-encoder VAE.

    surrogate = mean_m [log p(x|z_m) + log p(z_m)] + :func:`entropy_surrogate` with the estimator's
    score: its gradient in (theta, phi) is the ELBO's gradient up to the score estimate's error.
    """
    z = vae.encoder.sample(x, n_samples)
    log_joint = vae.log_joint(x, z).mean(1)
    score = estimate_encoder_score(estimator, z, x, fit)
    return log_joint + entropy_surrogate(z, score), log_joint.detach()


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def fitted_gaussian_proposal(vae: VAE, x: torch.Tensor, *, n_fit: Optional[int] = None, widen: float = 1.5,
                             prior_weight: float = 0.5, jitter: float = 1e-4):
    r"""Per-row proposal r(z|x) = (1 - a) N(m(x), widen^2 C(x) + jitter I) + a N(0, I) (a = ``prior_weight``, default 1/2),
    m and C the mean and covariance of ``n_fit`` encoder samples of x (default max(64, 4 L)).

    The prior component is *defensive* (Hesterberg 1995): the weight p(x, z) / r(z) never exceeds
    p(x | z) / a, so an encoder that is too narrow or off the true posterior (an implicit encoder
    trained with a biased entropy gradient often is) cannot make the estimate collapse.
    Returns a torch MixtureSameFamily of MultivariateNormals, batch (B,)."""
    latent = vae.latent_dim
    n_fit = max(64, 4 * latent) if n_fit is None else checks.positive_int(n_fit, "n_fit", minimum=latent + 1)
    a = float(prior_weight)
    if not 0.0 < a < 1.0:
        raise ValueError(f"prior_weight must lie in (0, 1), got {prior_weight}; e.g. 0.2")
    z = vae.encoder.sample(x, n_fit)
    mean = z.mean(1)
    centred = z - mean[:, None]
    eye = torch.eye(latent, device=x.device)
    cov = checks.positive(widen, "widen") ** 2 * centred.transpose(1, 2) @ centred / (n_fit - 1) + jitter * eye
    means = torch.stack([mean, torch.zeros_like(mean)], 1)                      # (B, 2, L)
    covs = torch.stack([cov, eye.expand_as(cov)], 1)
    weights = torch.tensor([1 - a, a], device=x.device).expand(len(x), 2)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=weights),
                                                 torch.distributions.MultivariateNormal(means, covariance_matrix=covs))


@torch.no_grad()
def importance_log_likelihood(vae: VAE, x: torch.Tensor, *, n_importance: int = 1000, n_fit: Optional[int] = None,
                              widen: float = 1.5, prior_weight: float = 0.5, chunk_size: int = 64,
                              proposal: str = "fitted") -> torch.Tensor:
    r"""Importance-sampling estimate of log p_theta(x) per row, shape (n,):

    .. math:: \log\hat p(x) = \log\frac1K\sum_{k=1}^K \frac{p(x|z_k)\,p(z_k)}{r(z_k|x)},\qquad z_k\sim r(\cdot|x).

    Proposal r: ``"fitted"`` (default, used for every encoder in the lesson's table) is
    :func:`fitted_gaussian_proposal`: 0.5 x a Gaussian with the mean and (x1.5 widened) covariance of
    encoder samples of x, plus 0.5 x the prior (at most log 2 nats worse than the better of the two
    alone); ``"encoder"`` uses a Gaussian encoder's own q(z|x);
    ``"prior"`` uses p(z). K = ``n_importance``. By Jensen, E[log p-hat] <= log p(x) for any
    proposal (a stochastic lower bound); the gap shrinks as K grows.
    """
    x = checks.as_batch(x, "x", dim=vae.decoder.data_dim)
    k = checks.positive_int(n_importance, "n_importance")
    checks.one_of(proposal, "proposal", ("fitted", "encoder", "prior"))
    if proposal == "encoder" and vae.kind != "gaussian":
        raise ValueError("proposal='encoder' needs a Gaussian encoder (an implicit one has no density); use 'fitted'")
    vae.eval()
    device = next(vae.parameters()).device
    out = []
    for rows in torch.split(x.to(device), checks.positive_int(chunk_size, "chunk_size")):
        if proposal == "fitted":
            r = fitted_gaussian_proposal(vae, rows, n_fit=n_fit, widen=widen, prior_weight=prior_weight)
            z = r.sample((k,))                                                  # (K, B, L)
            log_r = r.log_prob(z).transpose(0, 1)
            z = z.transpose(0, 1)
        elif proposal == "encoder":
            z = vae.encoder.sample(rows, k)
            log_r = vae.encoder.log_prob(z, rows)
        else:
            z = torch.randn(len(rows), k, vae.latent_dim, device=device)
            log_r = log_standard_normal(z)
        log_w = vae.log_joint(rows, z) - log_r
        out.append(torch.logsumexp(log_w, 1) - math.log(k))
    return torch.cat(out).cpu()


# ----------------------------------------------------------------------------- training

@dataclass
class VAEHistory:
    """Per step: the training objective's value (``loss`` = -surrogate, meaningful only for its
    gradient with an implicit encoder) and the expected log-joint; every ``eval_every`` steps the
    validation IS log-likelihood (``eval_log_lik``, nats per image, at ``eval_steps``)."""

    loss: List[float] = field(default_factory=list)
    log_joint: List[float] = field(default_factory=list)
    eval_steps: List[int] = field(default_factory=list)
    eval_log_lik: List[float] = field(default_factory=list)
    seconds: float = 0.0


def train_vae(vae: VAE, x_train: torch.Tensor, estimator: Optional[ScoreEstimator] = None, *, steps: int = 2000,
              batch_size: int = 64, n_samples: int = 8, lr: float = 1e-3, generator: Optional[torch.Generator] = None,
              x_valid: Optional[torch.Tensor] = None, eval_every: int = 0, eval_importance: int = 100,
              progress: bool = True, device=None) -> VAEHistory:
    """Adam on the ELBO (Gaussian encoder, ``estimator=None``) or on :func:`implicit_elbo_surrogate`
    (implicit encoder with a score ``estimator``, whose network, if any, trains alongside: its
    ``steps_per_fit`` steps per VAE step on the current encoder samples). ``n_samples`` encoder draws
    per image (the kernel estimators' sample-set size). With ``x_valid`` and ``eval_every > 0`` the
    IS log-likelihood (K = ``eval_importance``) is recorded along the way (not timed).

    The loop is :func:`csm_edu.train.fit` (constant ``lr``, no decay); ``generator`` drives the
    minibatches and, through fit's forked RNG, the encoder noise (default: seeded 0)."""
    x_train = checks.as_batch(x_train, "x_train", dim=vae.decoder.data_dim)
    steps = checks.positive_int(steps, "steps")
    batch_size = checks.positive_int(batch_size, "batch_size")
    n_samples = checks.positive_int(n_samples, "n_samples", minimum=1 if vae.kind == "gaussian" else 2)
    eval_every = checks.positive_int(eval_every, "eval_every", minimum=0)
    if vae.kind == "implicit" and estimator is None:
        raise ValueError("an implicit encoder needs a score estimator, e.g. score_estimators.SpectralSteinGradientEstimator()")
    if vae.kind == "gaussian" and estimator is not None:
        raise ValueError("a Gaussian encoder has an exact entropy: pass estimator=None")
    dev = train.resolve_device(device)
    if estimator is not None and hasattr(estimator, "module"):
        estimator.module.to(dev)
    history = VAEHistory()

    def loss_fn(model, x):
        if estimator is None:
            objective = gaussian_elbo(model, x, n_samples)
            log_joint = objective.detach()
        else:
            objective, log_joint = implicit_elbo_surrogate(model, x, estimator, n_samples=n_samples)
        history.log_joint.append(float(log_joint.mean()))
        return -objective.mean()

    callbacks = []
    if x_valid is not None and eval_every:
        x_valid = checks.as_batch(x_valid, "x_valid", dim=vae.decoder.data_dim).to(dev)

        def evaluate(step, model, _):
            if step % eval_every == 0 or step == steps:
                history.eval_steps.append(step)
                history.eval_log_lik.append(float(importance_log_likelihood(model, x_valid, n_importance=eval_importance).mean()))
        callbacks.append(evaluate)
    try:
        run = train.fit(vae, loss_fn, x_train, steps=steps, batch_size=batch_size, lr=lr, lr_decay=False,
                        callbacks=callbacks, generator=generator, progress=progress, device=dev)
    except FloatingPointError as err:
        raise FloatingPointError(f"VAE {err}") from None
    history.loss, history.seconds = run.loss, run.seconds
    return history
