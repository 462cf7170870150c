r"""Masked autoregressive networks: MADE masks and a residual MADE (Nash & Durkan 2019).

A network is *autoregressive* in a variable order pi (``order``: the variable indices in the
order they are generated) when its output for variable d depends only on the variables that
come before d. MADE (Germain et al. 2015) gets this from one ordinary network by zeroing weights:

- every input variable i gets the degree r(i) = its 1-based position in ``order``; extra
  conditioning inputs y (``cond_dim > 0``) get degree 0 (everyone may see them);
- every hidden unit k gets a degree m(k) in {0, ..., D-1}; it may read inputs and hidden
  units of degree <= m(k) (``mask_from_degrees(..., strict=False)``);
- the outputs of variable d may read hidden units of degree < r(d) (``strict=True``).

By induction a hidden unit of degree m depends only on the first m variables, so the context
of variable d depends only on x_<d (x before d in the order). :class:`ResMADE` adds residual
blocks, whose skip connections keep the degrees, so the property survives any depth.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks


def check_order(order: Optional[Sequence[int]], dim: int) -> torch.Tensor:
    """Return ``order`` (default 0, 1, ..., D-1) as a LongTensor, raising unless it is a permutation of range(dim)."""
    if order is None:
        return torch.arange(dim)
    o = torch.as_tensor(list(order), dtype=torch.long).flatten()
    if o.numel() != dim or not torch.equal(torch.sort(o).values, torch.arange(dim)):
        raise ValueError(f"order must be a permutation of 0..{dim - 1} (each variable once), got {list(order)}")
    return o


def input_degrees(order: torch.Tensor) -> torch.Tensor:
    """Degree of each input variable: r(order[k]) = k + 1, i.e. its 1-based position in the order."""
    deg = torch.empty_like(order)
    deg[order] = torch.arange(1, len(order) + 1)
    return deg


def hidden_degrees(n_units: int, dim: int, min_degree: int = 1) -> torch.Tensor:
    """Degrees of ``n_units`` hidden units, cycling through min_degree, ..., D-1 (evenly spread)."""
    top = max(dim - 1, min_degree)
    return min_degree + torch.arange(n_units) % (top - min_degree + 1)


def mask_from_degrees(in_degrees: torch.Tensor, out_degrees: torch.Tensor, strict: bool) -> torch.Tensor:
    """Mask M[o, i] = 1 when output unit o may read input unit i: out > in (strict) or out >= in."""
    out, inp = out_degrees[:, None], in_degrees[None, :]
    return ((out > inp) if strict else (out >= inp)).float()


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied elementwise by a fixed 0/1 ``mask`` (out, in)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        if mask.shape != (out_features, in_features):
            raise ValueError(f"mask must have shape ({out_features}, {in_features}), got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class _MaskedResidualBlock(nn.Module):
    """h + W2 act(W1 act(h)) with masks that keep each unit's degree (W2 starts at zero)."""

    def __init__(self, mask: torch.Tensor, activation):
        super().__init__()
        n = mask.shape[0]
        self.act = activation()
        self.linear1 = MaskedLinear(n, n, mask)
        self.linear2 = MaskedLinear(n, n, mask)
        nn.init.zeros_(self.linear2.weight)
        nn.init.zeros_(self.linear2.bias)

    def forward(self, h):
        return h + self.linear2(self.act(self.linear1(self.act(h))))


class ResMADE(nn.Module):
    r"""Residual MADE: a context vector c_d in R^{context_dim} for every variable d, depending on x_<d only.

    ``forward(x, y=None)`` maps x of shape (n, D) (and an optional condition y of shape
    (n, cond_dim), visible to every d) to contexts of shape (n, D, context_dim), indexed by the
    variable d itself (not by its position in ``order``). The first variable's context depends on y
    only (on nothing when cond_dim = 0: it is a learned constant).

    Architecture: masked input layer -> ``n_blocks`` masked residual blocks
    h <- h + W2 act(W1 act(h)) (Nash & Durkan 2019) -> act -> masked output layer.
    ``n_blocks=0`` is a plain one-hidden-layer MADE. SiLU by default: ARCSM differentiates
    through the network, so a smooth activation keeps second derivatives meaningful.
    """

    def __init__(self, dim: int, context_dim: int, *, hidden: int = 64, n_blocks: int = 2,
                 order: Optional[Sequence[int]] = None, cond_dim: int = 0, activation=nn.SiLU):
        super().__init__()
        self.dim = checks.positive_int(dim, "dim")
        self.context_dim = checks.positive_int(context_dim, "context_dim")
        hidden = checks.positive_int(hidden, "hidden")
        n_blocks = checks.positive_int(n_blocks, "n_blocks", minimum=0)
        self.cond_dim = checks.positive_int(cond_dim, "cond_dim", minimum=0)
        self.register_buffer("order", check_order(order, self.dim))
        deg_x = input_degrees(self.order)
        deg_in = torch.cat([deg_x, torch.zeros(self.cond_dim, dtype=torch.long)])
        # degree-0 units can only see y; without y they would be constants, so start at 1 then
        min_degree = 0 if (self.cond_dim > 0 or self.dim == 1) else 1
        deg_h = hidden_degrees(hidden, self.dim, min_degree)
        deg_out = deg_x.repeat_interleave(self.context_dim)          # output (d, k) -> degree of d
        self.input_layer = MaskedLinear(self.dim + self.cond_dim, hidden, mask_from_degrees(deg_in, deg_h, strict=False))
        hidden_mask = mask_from_degrees(deg_h, deg_h, strict=False)
        self.blocks = nn.ModuleList([_MaskedResidualBlock(hidden_mask, activation) for _ in range(n_blocks)])
        self.act = activation()
        self.output_layer = MaskedLinear(hidden, self.dim * self.context_dim, mask_from_degrees(deg_h, deg_out, strict=True))

    def connectivity(self) -> torch.Tensor:
        """(D, D) matrix: entry [d, j] = 1 when the context of d can depend on x_j (product of masks).

        It is strictly lower triangular after permuting rows and columns into ``order``.
        """
        def reach(mask, paths):  # which units of the next layer have a path from each input
            return ((mask.float() @ paths) > 0).float()

        path = (self.input_layer.mask[:, : self.dim] > 0).float()
        for block in self.blocks:   # h + W2 act(W1 act(h)): the skip path plus the two-layer path
            path = ((path + reach(block.linear2.mask, reach(block.linear1.mask, path))) > 0).float()
        out = reach(self.output_layer.mask, path).reshape(self.dim, self.context_dim, self.dim).sum(1)
        return (out > 0).float()

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.cond_dim:
            if y is None or y.dim() != 2 or y.shape != (x.shape[0], self.cond_dim):
                raise ValueError(f"y must have shape (n, cond_dim) = ({x.shape[0]}, {self.cond_dim}), "
                                 f"got {None if y is None else tuple(y.shape)}")
            x = torch.cat([x, y.to(x)], 1)
        elif y is not None:
            raise ValueError("y was given but this network has cond_dim=0; build it with cond_dim=y.shape[1]")
        h = self.input_layer(x)
        for block in self.blocks:
            h = block(h)
        return self.output_layer(self.act(h)).reshape(x.shape[0], self.dim, self.context_dim)
