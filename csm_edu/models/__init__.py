"""Models: energy and score networks, autoregressive models and baselines.

**Density models** (DESIGN.md, Contracts) answer ``log_prob(x, ...)`` and
``sample(n, *, generator=None, ...)`` on their own data space, with their evaluation options as
keyword arguments: :class:`ARCSM` (any :class:`AutoregressiveScoreModel`) through 1-D
quadrature on its support ``bounds`` and the inverse-CDF (or Langevin) sampler; :class:`AEM`
through importance-sampled normalisers and SIR; :class:`GaussianMADE`, :class:`MixtureMADE`
exactly. The discrete image model :class:`PixelCNNPP` declares its data space by ``levels``: its
``log_prob(x)`` takes x = k / (levels - 1) and returns the log probability *mass* log P(k) (nats),
and ``sample`` returns such x; continuous models return log *densities*.
"""
from .mlp import EnergyMLP, NoiseConditionalScoreNet, ScoreMLP, mlp, score_from_energy  # noqa: F401
from .arcsm import ARCSM, AutoregressiveScoreModel, ExactConditionalScores  # noqa: F401,E402
from .baselines import GaussianMADE, MixtureMADE  # noqa: F401,E402
from .aem import AEM, AEMLoss  # noqa: F401,E402
from .pixelcnn import PixelCNNContext, PixelCNNPP, raster_order  # noqa: F401,E402
