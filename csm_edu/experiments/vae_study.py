r"""Lesson 12 panels and helpers: score estimators side by side, and the implicit-encoder VAE table.

Part 1. An *implicit* 2-D distribution: the banana z = (s u_1, u_2 + b (s^2 u_1^2 - s^2)), u ~ N(0, I)
(:class:`csm_edu.distributions.Banana`), a pushed-forward noise whose score we know exactly, so
each estimator, seeing only samples, can be compared with the truth.
:func:`fit_estimators` fits every estimator for every sample size once (the kernel ones store
their samples, the networks train); :func:`csm_edu.widgets.lesson12.estimator_field_figure` draws the chosen one's score
field next to the true one and reads out its Fisher divergence (precomputed, so the panel
responds in well under 2 s); :func:`csm_edu.widgets.lesson12.estimator_panel` wires a dropdown and a sample-size slider.

Part 2. :func:`run_vae_experiment` trains the Gaussian-encoder reference and the implicit encoders
with each estimator and measures the decoder's importance-sampled test log-likelihood
(:func:`csm_edu.vae.importance_log_likelihood`); :func:`csm_edu.widgets.lesson12.format_vae_table` prints the table.
"""
import time
from typing import Optional, Sequence
import torch
from .. import checks, config, metrics, resources
from .. import distributions as dist
from .. import score_estimators as S
from .. import vae as V

ESTIMATOR_NAMES = ("Stein", "SSGE", "SSM", "CSM")
VAE_METHODS = ("Gaussian encoder", "implicit + SSM", "implicit + Stein", "implicit + SSGE", "implicit + CSM")



def implicit_target() -> dist.Banana:
    """The lesson's 2-D implicit distribution: a banana (push-forward of N(0, I)) with an exact score."""
    return dist.Banana(s=1.2, b=0.5)


def make_estimator(name: str, *, dim: int = 2, cond_dim: int = 0, hidden: int = 64, lr: float = 3e-3,
                   standardize=False, steps_per_fit: int = 1) -> S.ScoreEstimator:
    """One of ``ESTIMATOR_NAMES`` with the lesson's settings (Stein eta = 0.1, SSGE threshold 0.98,
    SSM-VR and CSM networks of width ``hidden``). ``standardize`` (kernel estimators only: False, True / "diagonal",
    "full") whitens each sample set before the kernel sees it (see the estimators' docstring);
    ``steps_per_fit`` (networks only): Adam steps per ``fit`` call."""
    checks.one_of(name, "name", ESTIMATOR_NAMES)
    if name == "Stein":
        return S.SteinGradientEstimator(eta=0.1, standardize=standardize)
    if name == "SSGE":
        return S.SpectralSteinGradientEstimator(threshold=0.98, standardize=standardize)
    if name == "SSM":
        return S.SlicedScoreEstimator(dim, cond_dim=cond_dim, hidden=hidden, lr=lr, steps_per_fit=steps_per_fit)
    return S.CompositeScoreEstimator(dim, cond_dim=cond_dim, hidden=hidden, context_dim=8, head_hidden=32, lr=lr,
                                     steps_per_fit=steps_per_fit)


def fit_estimators(target=None, *, sample_sizes: Sequence[int] = (50, 200, 800), names: Sequence[str] = ESTIMATOR_NAMES,
                   n_steps: int = 300, batch_size: int = 128, n_test: int = 1000, seed: int = 0,
                   progress: bool = False):
    """Fit every estimator on the first n samples of one draw of ``target``, for every n in ``sample_sizes``.

    Networks take ``n_steps`` Adam steps on minibatches of their n samples. Returns a dict
    (name, n) -> {"estimator", "samples", "fisher", "information", "seconds"}: the Fisher divergence
    1/2 E|s_hat - grad log p|^2 on ``n_test`` fresh samples, and the Fisher information
    1/2 E|grad log p|^2 (the divergence of the zero field) for scale.
    ``progress=True`` shows a tqdm.auto bar over the (estimator, n) fits with the current estimator and n
    (and a network's training loss); the fits, their order and their random draws are the same either way.
    """
    target = target or implicit_target()
    g = torch.Generator().manual_seed(seed)
    sizes = [checks.positive_int(n, "sample_sizes", minimum=2) for n in sample_sizes]
    pool = target.sample(max(sizes), generator=g)
    x_test = target.sample(checks.positive_int(n_test, "n_test"), generator=g)
    information = metrics.fisher_divergence(lambda z: torch.zeros_like(z), target, x_test)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(names) * len(sizes), desc="score estimators", unit="fit", leave=False)
    out = {}
    try:
        for name in names:
            for n in sizes:
                if bar is not None:
                    bar.set_postfix_str(f"{name}, n={n}")
                with config.seeded(seed):
                    est = make_estimator(name, dim=target.dim)
                    z = pool[:n]
                    start = time.perf_counter()
                    if est.amortised:
                        steps = checks.positive_int(n_steps, "n_steps")
                        for step in range(steps):
                            est.fit(z[torch.randint(0, n, (min(batch_size, n),), generator=g)])
                            if bar is not None and ((step + 1) % 25 == 0 or step + 1 == steps) and est.loss_history:
                                bar.set_postfix_str(f"{name}, n={n}, step {step + 1}/{steps}, "
                                                    f"loss {float(est.loss_history[-1]):.3g}")
                    else:
                        est.fit(z)
                    seconds = time.perf_counter() - start
                    fisher = metrics.fisher_divergence(est.score, target, x_test)
                    out[name, n] = {"estimator": est, "samples": z, "fisher": fisher, "information": information,
                                    "seconds": seconds}
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return out


def build_vae(method: str, data_dim: int, latent: int, *, hidden: Sequence[int] = (256, 256), noise_skip="networks"):
    """The untrained VAE of :func:`run_vae_experiment` for ``method`` (one of ``VAE_METHODS``)."""
    checks.one_of(method, "method", VAE_METHODS)
    if method == "Gaussian encoder":
        return V.make_vae("gaussian", data_dim, latent, hidden=hidden)
    name = method.split("+ ")[1]
    skip = noise_skip is True or (noise_skip == "networks" and name in ("SSM", "CSM"))
    return V.make_vae("implicit", data_dim, latent, hidden=hidden, noise_skip=skip)


def run_vae_experiment(x_train: torch.Tensor, x_test: torch.Tensor, *, latent_dims: Sequence[int] = (8, 32),
                       methods: Sequence[str] = VAE_METHODS, n_steps: int = 2000, batch_size: int = 64,
                       hidden: Sequence[int] = (256, 256), lr: float = 1e-3, kernel_samples: Optional[int] = None,
                       network_samples: int = 4, estimator_lr: float = 1e-3, n_importance: int = 1000,
                       eval_every: int = 0, n_valid: int = 200, seed: int = 0, device=None,
                       standardize_kernels: bool = True, estimator_steps: int = 5, noise_skip="networks",
                       progress: bool = True):
    """Train one VAE per (latent size, method) and measure its decoder's test log-likelihood.

    Same decoder/encoder widths, Adam schedule and seed for all. Encoder samples per image per step:
    1 (Gaussian, exact entropy), ``kernel_samples`` (Stein, SSGE: the sample set each estimate uses),
    ``network_samples`` (SSM, CSM: amortised networks conditioned on x, ``estimator_steps`` Adam steps per VAE step at
    ``estimator_lr``). ``kernel_samples=None`` means max(16, 2 L) for latent size L: a set of M <= L
    samples spans at most M - 1 directions, and the implicit encoder collapses along the others
    unseen (lesson 12 measures how far). With ``standardize_kernels`` (default)
    Stein and SSGE whiten each image's sample set before the kernel sees it (``standardize="full"``
    when M > L, else per coordinate): a VAE posterior mixes active latents (sigma ~ 0.3) with
    inactive ones (sigma ~ 1), one median bandwidth gives the narrow directions almost no entropy
    gradient and they collapse.
    The networks take ``estimator_steps`` Adam steps per VAE step (default 5): with one, the network
    lags the encoder, under-estimates the score of a shrinking q(z|x) (whose score grows like
    1/sigma), the entropy gradient vanishes and the encoder collapses to a point (tests/test_vae.py
    shows it on a Gaussian encoder trained through the estimator, whose true score is known).
    ``noise_skip`` gives implicit encoders a linear noise path (:class:`csm_edu.vae.ImplicitEncoder`):
    ``"networks"`` (default) only those trained with SSM / CSM, ``True`` all, ``False`` none. Reason:
    the plain MLP([x, eps]) starts near a point (sd ~ 0.005-0.05, score ~ 1/sd ~ 100s), which a
    score network starting near zero output with ordinary weights does not catch up with; it returns
    about half of the entropy gradient and at L = 32 the encoder stays collapsed (digits, 1500 steps:
    ~10% of the directions of q(z|x) at sd 0.03-0.1, Stein's identity E[s^T (z - m)] = -L met at
    about -15 of -32; SSM -21.0 / -20.7 / -23.2 for seeds 0 / 1 / 2 and CSM -20.2 without the skip,
    SSM -17.3 / -17.3 / -17.4 and CSM -17.8 with it; L = 8 unchanged or better: SSM -17.0 -> -16.9,
    CSM -17.0 -> -16.9). The whitened kernel estimators are
    affine-equivariant, so a near-point start does not hurt them, and a unit-spread start did
    (whitened Stein, L = 32: -18.0 without, -25.7 with): they keep the plain encoder.
    Test log-likelihood: :func:`csm_edu.vae.importance_log_likelihood` with
    K = ``n_importance`` and its default proposal. With ``eval_every`` the curve of the IS
    log-likelihood (K = 100) on the first ``n_valid`` test images is recorded.
    ``progress``: a tqdm bar with the loss per model, the model's name printed above it.
    Returns ``(rows, histories, models)``; rows hold latent, method, log_lik, seconds, ms_per_step.
    """
    x_train = checks.as_batch(x_train, "x_train")
    x_test = checks.as_batch(x_test, "x_test", dim=x_train.shape[1])
    if not (isinstance(noise_skip, bool) or noise_skip == "networks"):
        raise ValueError(f"noise_skip must be True, False or 'networks', got {noise_skip!r}")
    data_dim = x_train.shape[1]
    rows, histories, models = [], {}, {}
    for latent in latent_dims:
        for method in methods:
            checks.one_of(method, "method", VAE_METHODS)
            with config.seeded(seed):
                vae = build_vae(method, data_dim, latent, hidden=hidden, noise_skip=noise_skip)
                if method == "Gaussian encoder":
                    est, m = None, 1
                else:
                    name = method.split("+ ")[1]
                    if name in ("Stein", "SSGE"):
                        m = max(16, 2 * latent) if kernel_samples is None else kernel_samples
                    else:
                        m = network_samples
                    standardize = ("full" if m > latent else "diagonal") if standardize_kernels else False
                    est = make_estimator(name, dim=latent, cond_dim=data_dim, hidden=128, lr=estimator_lr,
                                         standardize=standardize, steps_per_fit=estimator_steps)
                if progress:
                    print(f"training L={latent}: {method} ({n_steps} steps)", flush=True)
                hist = V.train_vae(vae, x_train, est, steps=n_steps, batch_size=batch_size, n_samples=m, lr=lr,
                                   generator=torch.Generator().manual_seed(seed), x_valid=x_test[:n_valid] if eval_every else None, eval_every=eval_every,
                                   device=device, progress=progress)
                with config.seeded(seed + 1):
                    log_lik = float(V.importance_log_likelihood(vae, x_test, n_importance=n_importance).mean())
                    rows.append({"latent": latent, "method": method, "log_lik": log_lik, "seconds": hist.seconds,
                                 "ms_per_step": 1000 * hist.seconds / n_steps})
                    histories[latent, method] = hist
                    models[latent, method] = vae.cpu()
    return rows, histories, models


# ---- the shipped checkpoint of lesson 12's full-mode VAEs (digits) ----

FULL_SETTINGS = dict(latent_dims=(8, 32), n_steps=1500, batch_size=64, hidden=(256, 256), lr=1e-3, estimator_lr=1e-3,
                     network_samples=4, n_importance=1000, eval_every=300, n_valid=100, seed=0)
CHECKPOINT = "checkpoints/vae_digits.pt"
CHECKPOINT_COMMAND = "python -m csm_edu.experiments.vae_study --make-checkpoint"


def evaluate(models, x_test: torch.Tensor, *, n_importance: int = 1000, seed: int = 0):
    """Test log-likelihood of each model as :func:`run_vae_experiment` measures it (same seed, same K):
    {(latent, method): mean IS log p(x) in nats}."""
    out = {}
    for key, vae in models.items():
        with config.seeded(seed + 1):
            out[key] = float(V.importance_log_likelihood(vae, x_test, n_importance=n_importance).mean())
    return out


def make_checkpoint(path=None, *, progress: bool = True):
    """Train lesson 12's full-mode VAEs on the digits (:data:`FULL_SETTINGS`, as the lesson's full mode does)
    and write their state_dicts (float16, to keep the file small), the table rows and the curves to
    ``path`` (default: the package's :data:`CHECKPOINT`). The rows' ``log_lik`` is re-measured on the
    float16-rounded weights, i.e. on exactly what :func:`load_checkpoint` returns (``log_lik_float32``:
    the value before rounding). Deterministic from ``FULL_SETTINGS["seed"]`` (times are measured)."""
    st = FULL_SETTINGS
    x_train, x_test = V.load_binary_images("digits", "train"), V.load_binary_images("digits", "test")
    rows, histories, models = run_vae_experiment(
        x_train, x_test, latent_dims=st["latent_dims"], n_steps=st["n_steps"], batch_size=st["batch_size"],
        hidden=st["hidden"], lr=st["lr"], estimator_lr=st["estimator_lr"], network_samples=st["network_samples"],
        n_importance=st["n_importance"], eval_every=st["eval_every"], n_valid=st["n_valid"], seed=st["seed"],
        device="cpu", progress=progress)
    state_dicts = {f"{latent}/{method}": {k: v.detach().cpu().half() for k, v in m.state_dict().items()}
                   for (latent, method), m in models.items()}
    state = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in st.items()},
             "command": CHECKPOINT_COMMAND, "models": state_dicts,
             "histories": {f"{latent}/{method}": {"loss": torch.tensor(h.loss, dtype=torch.float32),
                                                  "eval_steps": list(h.eval_steps), "eval_log_lik": list(h.eval_log_lik),
                                                  "seconds": float(h.seconds)}
                           for (latent, method), h in histories.items()}}
    path = resources.save_checkpoint({**state, "rows": []}, CHECKPOINT, target=path)  # rows: after the rounding
    _, _, loaded = load_checkpoint(path)
    rounded = evaluate(loaded, x_test, n_importance=st["n_importance"], seed=st["seed"])
    state["rows"] = [{**r, "log_lik_float32": r["log_lik"], "log_lik": rounded[r["latent"], r["method"]]} for r in rows]
    return resources.save_checkpoint(state, CHECKPOINT, target=path)


def checkpoint_shipped() -> bool:
    """Whether the package holds :data:`CHECKPOINT` (lesson 12 trains its VAEs itself when it does not)."""
    return resources.shipped(CHECKPOINT)


def load_checkpoint(path=None):
    """The shipped VAEs: ``(rows, histories, models)`` as :func:`run_vae_experiment` returns them,
    read with ``weights_only=True`` (float16 weights cast to float32)."""
    state = resources.load_checkpoint(CHECKPOINT, source=path)
    st = state["settings"]
    models, histories = {}, {}
    for key, sd in state["models"].items():
        latent, method = key.split("/", 1)
        latent = int(latent)
        vae = build_vae(method, 64, latent, hidden=tuple(st["hidden"]))
        vae.load_state_dict({k: v.float() for k, v in sd.items()})
        vae.eval()
        models[latent, method] = vae
        h = state["histories"][key]
        histories[latent, method] = V.VAEHistory(loss=h["loss"].tolist(), eval_steps=list(h["eval_steps"]),
                                                 eval_log_lik=list(h["eval_log_lik"]), seconds=h["seconds"])
    return [dict(r) for r in state["rows"]], histories, models


if __name__ == "__main__":
    import sys
    sys.exit(resources.checkpoint_command(make_checkpoint, CHECKPOINT_COMMAND))
