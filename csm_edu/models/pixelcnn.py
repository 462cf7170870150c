"""PixelCNN building blocks, a causal context network, and a PixelCNN++-style MLE baseline.

Ordering. An image of shape ``(C, H, W)`` is generated as ``D = C H W`` scalars in raster order:
pixel ``(i, j)`` comes after every pixel of earlier rows and every pixel to its left, and within a
pixel channel ``c`` comes after channels ``0..c-1`` (R -> G -> B): step ``t = (i W + j) C + c``.
Variables are *indexed* as in ``x.reshape(n, -1)`` (variable ``v = c H W + i W + j``), like
:class:`~csm_edu.models.made.ResMADE`, and ``order = raster_order(image_shape)`` lists the variable
generated at each step (``order[t] = v``). For ``C = 1`` the two coincide: ``order = 0, ..., D-1``.

Causality with masked convolutions (van den Oord et al., 2016). A ``k x k`` kernel centred on
``(i, j)`` keeps the rows above and the pixels to the left in the centre row. At the centre pixel
the channels are split into ``C`` groups (group ``g`` "belongs" to image channel ``g``): a mask of
type A lets group ``g`` read input groups ``< g`` only (the first layer, so the context of ``x_v``
never sees ``x_v``); type B lets it read groups ``<= g`` (every later layer, which already excludes
``x_v``). Stacking type A then type B layers keeps the context of each variable a function of the
earlier variables only. This plain stack has the known "blind spot" (a wedge of pixels up and to
the right of ``(i, j)`` that the receptive field misses): it is causal, it just does not use every
earlier pixel (the gated PixelCNN's two stacks would remove it).
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks


def check_image_shape(image_shape) -> tuple:
    """Return ``image_shape`` as a tuple ``(C, H, W)`` of positive ints, else raise ``ValueError``."""
    try:
        c, h, w = (int(v) for v in image_shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"image_shape must be (C, H, W), e.g. (1, 28, 28), got {image_shape!r}") from err
    if min(c, h, w) < 1:
        raise ValueError(f"image_shape must hold positive sizes (C, H, W), got {image_shape!r}")
    return c, h, w


def raster_order(image_shape) -> torch.Tensor:
    """``order[t]``: flat index (as in ``x.reshape(n, -1)``) of the ``t``-th generated scalar.

    Pixel-major, channel-minor: ``order[(i W + j) C + c] = c H W + i W + j``.
    """
    c, h, w = check_image_shape(image_shape)
    return torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1)


def channel_groups(n_channels: int, n_groups: int) -> torch.Tensor:
    """Assign ``n_channels`` feature channels to ``n_groups`` contiguous groups: ``group[k] = k G // n``."""
    if n_channels < n_groups:
        raise ValueError(f"need at least one feature channel per image channel: {n_channels} < {n_groups}; "
                         f"use more hidden channels")
    return torch.arange(n_channels) * n_groups // n_channels


class MaskedConv2d(nn.Conv2d):
    """A ``k x k`` convolution whose kernel only reads pixels earlier in raster order (module docstring).

    ``in_groups`` / ``out_groups`` give the image channel each input / output channel belongs to;
    at the kernel centre, out group ``g`` reads in groups ``< g`` (``mask_type="A"``) or ``<= g``
    (``"B"``). Padding keeps the image size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str,
                 *, in_groups: torch.Tensor, out_groups: torch.Tensor):
        checks.one_of(mask_type, "mask_type", ("A", "B"))
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so the kernel has a centre, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        centre = kernel_size // 2
        mask = torch.zeros(out_channels, in_channels, kernel_size, kernel_size)
        mask[:, :, :centre, :] = 1.0  # rows above
        mask[:, :, centre, :centre] = 1.0  # left of the centre in the centre row
        later, same = out_groups[:, None] > in_groups[None, :], out_groups[:, None] == in_groups[None, :]
        mask[:, :, centre, centre] = (later if mask_type == "A" else later | same).float()
        self.register_buffer("mask", mask)
        self.mask_type = mask_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class GatedResidualBlock(nn.Module):
    """``h + W_1x1 [tanh(a) * sigmoid(b)]`` with ``(a, b)`` from a masked ``k x k`` type-B conv of ``h``.

    An optional conditioning vector (e.g. a class embedding) adds a per-channel bias to ``a`` and ``b``.
    """

    def __init__(self, channels: int, n_groups: int, kernel_size: int = 3, cond_dim: int = 0):
        super().__init__()
        groups = channel_groups(channels, n_groups)
        self.gate_conv = MaskedConv2d(channels, 2 * channels, kernel_size, "B", in_groups=groups, out_groups=groups.repeat(2))
        self.out_conv = MaskedConv2d(channels, channels, 1, "B", in_groups=groups, out_groups=groups)
        self.cond = nn.Linear(cond_dim, 2 * channels, bias=False) if cond_dim else None

    def forward(self, h: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        ab = self.gate_conv(h)
        if self.cond is not None and cond is not None:
            ab = ab + self.cond(cond)[:, :, None, None]
        a, b = ab.chunk(2, dim=1)
        return h + self.out_conv(torch.tanh(a) * torch.sigmoid(b))


class PixelCNNContext(nn.Module):
    """Causal backbone, images -> contexts ``(n, D, context_dim)``: a drop-in for ResMADE in ARCSM.

    ``forward(x, y=None)``: ``x`` is ``(n, C, H, W)`` or flat ``(n, D)`` (``x.reshape(n, -1)``).
    ``context[:, v]`` belongs to variable ``v`` of the flat layout and depends on ``x`` only through
    the variables generated before ``v`` in raster order (``self.order``, :func:`raster_order`); the
    first one's context is a learned constant (or a function of ``y`` alone). ``y`` (optional,
    ``(n, cond_dim)``, e.g. one-hot labels) is seen by every variable: it adds a bias to each gated
    block, as in the conditional PixelCNN. Layers: a ``first_kernel`` type-A masked conv,
    ``n_blocks`` :class:`GatedResidualBlock` (type B), then an ELU and a 1x1 type-B conv to
    ``C * context_dim`` channels (channel ``c``'s block read by group ``c``).
    """

    def __init__(self, image_shape=(1, 28, 28), *, context_dim: int = 32, hidden_channels: int = 64, n_blocks: int = 4,
                 kernel_size: int = 3, first_kernel: int = 7, cond_dim: int = 0):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        channels = self.image_shape[0]
        self.dim = math.prod(self.image_shape)
        self.context_dim = checks.positive_int(context_dim, "context_dim")
        checks.positive_int(hidden_channels, "hidden_channels", minimum=channels)
        checks.positive_int(n_blocks, "n_blocks", minimum=0)
        self.cond_dim = checks.positive_int(cond_dim, "cond_dim", minimum=0)
        self.register_buffer("order", raster_order(self.image_shape))
        image_groups = torch.arange(channels)
        hidden_groups = channel_groups(hidden_channels, channels)
        out_groups = image_groups.repeat_interleave(self.context_dim)
        self.input_conv = MaskedConv2d(channels, hidden_channels, first_kernel, "A", in_groups=image_groups, out_groups=hidden_groups)
        self.blocks = nn.ModuleList(GatedResidualBlock(hidden_channels, channels, kernel_size, self.cond_dim)
                                    for _ in range(n_blocks))
        self.output_conv = MaskedConv2d(hidden_channels, channels * self.context_dim, 1, "B", in_groups=hidden_groups, out_groups=out_groups)

    def as_images(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(n, C, H, W)``, from that shape or from flat ``(n, D)``; raise on anything else."""
        if x.dim() == 2 and x.shape[1] == self.dim:
            return x.reshape(len(x), *self.image_shape)
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (n, {self.dim}) or (n, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.as_images(x)
        if y is not None and (not self.cond_dim or tuple(y.shape) != (len(x), self.cond_dim)):
            raise ValueError(f"y must have shape (n, cond_dim) = ({len(x)}, {self.cond_dim}), got {tuple(y.shape)}; "
                             f"build the model with cond_dim > 0 to condition on y")
        cond = None if y is None else y.to(x.dtype)
        h = self.input_conv(x)
        for block in self.blocks:
            h = block(h, cond)
        out = self.output_conv(F.elu(h))  # (n, C * context_dim, H, W): channel c's context block is group c
        n, _, height, width = out.shape
        out = out.reshape(n, self.image_shape[0], self.context_dim, height, width)
        return out.permute(0, 1, 3, 4, 2).reshape(n, self.dim, self.context_dim)  # variable v = (c, i, j)


# ----------------------------------------------------------------------------- discretised logistic mixture

def _log1mexp(t: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-t))`` for ``t > 0``, accurate for small and large ``t`` (Maechler, 2012)."""
    return torch.where(t < math.log(2.0), torch.log(-torch.expm1(-t)), torch.log1p(-torch.exp(-t)))


def _log_sigmoid_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(a) - sigmoid(b))`` for ``a > b``, stable when both sit in the same tail.

    Uses ``sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a)`` to work in the smaller tail, then
    ``log(p - q) = log p + log1mexp(log p - log q)``.
    """
    flip = (a + b) > 0
    hi = torch.where(flip, -b, a)
    lo = torch.where(flip, -a, b)
    log_hi, log_lo = F.logsigmoid(hi), F.logsigmoid(lo)
    return log_hi + _log1mexp((log_hi - log_lo).clamp_min(1e-30))


def discretized_logistic_mixture_log_prob(k: torch.Tensor, logit_weights: torch.Tensor, means: torch.Tensor,
                                          log_scales: torch.Tensor, *, levels: int = 256) -> torch.Tensor:
    """Log-probability of integer pixels ``k in {0..L-1}`` under a discretised logistic mixture.

    Pixels live in ``[-1, 1]`` at centres ``v_k = 2k/(L-1) - 1``, half bin width ``delta = 1/(L-1)``
    (PixelCNN++, Salimans et al., 2017). Component ``m`` with mean ``mu_m``, scale ``s_m``:

        P(k | m) = sigmoid((v_k + delta - mu)/s) - sigmoid((v_k - delta - mu)/s),

    with the edge bins extended to infinity: ``P(0|m) = sigmoid((v_0 + delta - mu)/s)``,
    ``P(L-1|m) = 1 - sigmoid((v_{L-1} - delta - mu)/s)``, so ``sum_k P(k|m) = 1`` exactly. The
    mixture is ``P(k) = sum_m softmax(logit_weights)_m P(k|m)``. ``k`` has any shape ``S``; the
    parameters have shape ``S + (M,)``. Returns shape ``S``.
    """
    levels = checks.positive_int(levels, "levels", minimum=2)
    delta = 1.0 / (levels - 1)
    k = k.to(means.dtype)
    centre = (2.0 * k / (levels - 1) - 1.0)[..., None]
    inv_s = torch.exp(-log_scales)
    upper = (centre + delta - means) * inv_s
    lower = (centre - delta - means) * inv_s
    log_mid = _log_sigmoid_difference(upper, lower)
    log_first = F.logsigmoid(upper)  # k = 0: P = sigmoid(upper)
    log_last = F.logsigmoid(-lower)  # k = L-1: P = 1 - sigmoid(lower)
    kk = k[..., None].expand_as(upper)
    log_component = torch.where(kk <= 0, log_first, torch.where(kk >= levels - 1, log_last, log_mid))
    return torch.logsumexp(log_component + F.log_softmax(logit_weights, dim=-1), dim=-1)


class PixelCNNPP(nn.Module):
    """MLE baseline: a :class:`PixelCNNContext` whose per-variable head is a discretised logistic mixture.

    ``log_prob(x)`` takes images ``(n, C, H, W)`` (or flat ``(n, D)``) with values ``k/(L-1)`` in
    ``[0, 1]`` (``load_*(dequantize=False, scale="unit")``; ``L = 256``, or 17 for the digits) and
    returns ``log P(k)`` in nats per image, ``sum_t log P(k_{order[t]} | earlier k)``, each
    conditional a mixture of ``n_mixtures`` discretised logistics
    (:func:`discretized_logistic_mixture_log_prob`; the network sees ``2x - 1`` in ``[-1, 1]``).
    Channels within a pixel are handled by the backbone's channel masks (R -> G -> B) rather than
    PixelCNN++'s linear coupling of the means; mixture, edge bins and scale follow PixelCNN++.
    ``bits_per_dim(x) = -log_prob(x) / (D log 2)`` compares directly with the dequantised bits/dim of
    continuous models (:func:`csm_edu.data.image_data.bits_per_dim`), which upper-bound a discrete one.

    **Contract of a discrete image model.** ``log_prob`` and ``sample`` work on the model's own data
    space, x = k/(L-1), and ``log_prob`` is a log probability *mass*; the attribute ``levels`` = L
    declares that space (continuous density models have no ``levels``), so an experiment maps its
    integer pixels k to x = k/(L-1) for this model and back with k = x (L-1).
    """

    def __init__(self, image_shape=(1, 28, 28), *, n_mixtures: int = 5, levels: int = 256, hidden_channels: int = 64,
                 n_blocks: int = 4, kernel_size: int = 3, first_kernel: int = 7, cond_dim: int = 0):
        super().__init__()
        self.levels = checks.positive_int(levels, "levels", minimum=2)
        self.n_mixtures = checks.positive_int(n_mixtures, "n_mixtures")
        self.backbone = PixelCNNContext(image_shape, context_dim=3 * self.n_mixtures, hidden_channels=hidden_channels, n_blocks=n_blocks, kernel_size=kernel_size,
                                        first_kernel=first_kernel, cond_dim=cond_dim)
        self.image_shape, self.dim = self.backbone.image_shape, self.backbone.dim

    def _integers(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.as_images(x)
        k = torch.round(x * (self.levels - 1))
        if (x < 0).any() or (x > 1).any() or (k - x * (self.levels - 1)).abs().max() > 1e-3:
            raise ValueError(f"x must hold quantised values k/{self.levels - 1} in [0, 1]; load the images with "
                             f"dequantize=False, scale='unit' (levels={self.levels})")
        return k.reshape(len(x), -1)

    def mixture_parameters(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        """``(logit_weights, means, log_scales)``, each ``(n, D, n_mixtures)``, for ``x = k/(L-1)``."""
        params = self.backbone(2.0 * x - 1.0, y)
        logit_weights, means, log_scales = params.split(self.n_mixtures, dim=-1)
        return logit_weights, means, log_scales.clamp_min(-7.0)

    def log_prob(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``log P(k)`` in nats per image, shape ``(n,)``, for ``x = k/(L-1)``."""
        k = self._integers(x)
        logit_weights, means, log_scales = self.mixture_parameters(x, y)
        return discretized_logistic_mixture_log_prob(k, logit_weights, means, log_scales, levels=self.levels).sum(1)

    def bits_per_dim(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``-log2 P(k) / D`` per image, shape ``(n,)``."""
        return -self.log_prob(x, y) / (self.dim * math.log(2.0))

    def loss(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean bits/dim of the batch: the training objective (maximum likelihood, rescaled)."""
        return self.bits_per_dim(x, y).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None,
               y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Draw ``n`` images ``(n, C, H, W)`` with values ``k/(L-1)``, one variable at a time (``D`` passes).

        At step ``t`` (variable ``v = order[t]``): pick ``m ~ softmax(logit_weights)`` (Gumbel-max),
        draw ``u ~ U(0,1)``, ``z = mu_m + s_m log(u / (1 - u))`` and round it to the nearest bin
        centre, clamped to the edge bins: exactly a draw from ``P(k_v | earlier k)``.
        ``generator`` is a CPU generator; the draws are moved to the model's device.
        """
        n = checks.positive_int(n, "n")
        device = next(self.parameters()).device
        x = torch.zeros(n, self.dim, device=device)
        for v in self.backbone.order.tolist():
            logit_weights, means, log_scales = (p[:, v] for p in self.mixture_parameters(x, y))
            uniform = torch.rand(logit_weights.shape, generator=generator).clamp(1e-12, 1.0 - 1e-7).to(device)
            m = (logit_weights - torch.log(-torch.log(uniform))).argmax(-1, keepdim=True)  # Gumbel-max
            u = torch.rand(n, 1, generator=generator).clamp(1e-7, 1.0 - 1e-7).to(device)
            z = means.gather(-1, m) + log_scales.gather(-1, m).exp() * (torch.log(u) - torch.log1p(-u))
            k = torch.round((z[:, 0] + 1.0) / 2.0 * (self.levels - 1)).clamp(0, self.levels - 1)
            x[:, v] = k / (self.levels - 1)
        return x.reshape(n, *self.image_shape)
