"""Variational autoencoder baseline: a latent-variable proposal whose density is only estimated.

Model (Kingma & Welling, arXiv 1312.6114), convolutional with circular padding on the lattice:

    prior    p(z)       = N(0, 1) per latent site and channel, z of shape (c_z, *lattice)
    decoder  p(phi | z) = N(mu(z), sigma(z)^2) per site (continuous Gaussian decoder)
    encoder  r(z | phi) = N(m(phi), s(phi)^2) per latent site
    q(phi)   = int p(phi | z) p(z) dz          (intractable)

Training (``data_loss``) on configurations from an exact sampler: the negative IWAE bound
(Burda et al., arXiv 1509.00519) with ``n_train_importance`` = K' samples; K' = 1 is -ELBO:

    -L_K'(phi) = -log (1/K') sum_k w_k,   w_k = p(phi | z_k) p(z_k) / r(z_k | phi),  z_k ~ r(.|phi).

Density estimate, and which quantity must be unbiased
----------------------------------------------------
Independence Metropolis-Hastings accepts phi' from phi with min(1, W(phi')/W(phi)),
W = exp(-S)/q. An estimate q_hat enters in the DENOMINATOR, and a q_hat unbiased for q does not
make 1/q_hat unbiased for 1/q (Jensen: E[1/q_hat] >= 1/q). Using fresh draws z_1..z_K ~ r(.|phi)
for a proposal phi ~ q therefore samples a chain whose phi-marginal is proportional to
exp(-S(phi)) q(phi) E_r[1/q_hat(phi)] (biased toward phi where the estimate is noisy).

What does work is the pseudo-marginal construction (Andrieu & Roberts 2009) on the extended
state (phi, u), u = (z_1..z_K):

    target   pi_bar(phi, u) = exp(-S(phi))/Z * prod_k r(z_k | phi)        (phi-marginal exact)
    proposal Q_bar(phi, u)  = prod_k r(z_k | phi) * q_hat(phi, u),
             q_hat(phi, u)  = (1/K) sum_k p(phi | z_k) p(z_k) / r(z_k | phi).

Then pi_bar/Q_bar = exp(-S(phi))/(Z q_hat(phi, u)): the IMH weight with the estimate, exactly.
Q_bar is a normalised density because q_hat is unbiased for q under r (E_r[q_hat] = q):
int Q_bar du = E_r[q_hat] = q(phi). And Q_bar is what ``sample`` draws: expanding the sum,

    Q_bar = (1/K) sum_j [ p(z_j) p(phi | z_j) ] prod_{k != j} r(z_k | phi),

i.e. draw z_0 ~ p(z), phi ~ p(phi | z_0) (an exact draw from q), then K - 1 fresh encoder
draws, and put the GENERATING latent z_0 among the K importance samples (its slot is
irrelevant: q_hat is symmetric). Under this law, given phi, E[1/q_hat | phi] = 1/q(phi)
exactly (the condition the ``imh`` sampler states), although E[q_hat | phi] >= q(phi). So
``sample(n)`` returns log q_hat with z_0 included, and the IMH chain on (phi, u) that stores the current state's estimate (never recomputing it) is
exact. The identity behind it, tested: E_{Q_bar}[f(phi)/q_hat] = int f(phi) dphi for any f,
e.g. E[exp(-S)/q_hat] = Z, whereas with fresh draws it overestimates Z.

``log_prob(phi)`` is the estimator with K fresh encoder draws: unbiased for q(phi) in q (not
in log q), and a draw of u from pi_bar(u | phi) = prod r(z_k | phi), the right way to attach
an estimate to a chain's initial state phi that did not come from ``sample``.

Cost per proposal: K decoder passes (the generating one included) and one encoder pass, about
0.2 (K = 1), 0.5-0.8 (K = 4) and 3 (K = 16) times an affine flow's sample at L = 8
(bench/bench_families.py). A larger K lowers the noise of log q_hat and raises the acceptance,
at a cost linear in K. Pseudo-marginal theory (Doucet, Pitt, Deligiannidis, Kohn, Biometrika
102 (2015) 295) puts the best work-normalised efficiency at a standard deviation of log q_hat
of about 1 to 1.7. Measured at L = 8, beta = 0.577, lam = 0.5 after 40 s of ELBO training:
std(log q_hat) = 2.6, 1.3, 0.87, 0.55 and IMH acceptance 0.06, 0.085, 0.12, 0.15 for
K = 1, 4, 16, 64. Hence the default K = 4. K = 1 is the plain joint IMH on (phi, z) with weight
exp(-S) r(z|phi) / (p(z) p(phi|z)).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from lattgen import ConfigError, GenerativeModel, Lattice, LatticeError

from .conditionals import bounded_log_scale

CONV_BY_DIM = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
LOG_2PI = math.log(2 * math.pi)


def circular_conv_net(ndim: int, c_in: int, c_out: int, hidden: Sequence[int], kernel_size: int) -> nn.Sequential:
    """ConvNd stack with circular padding (periodic lattice), tanh between, last layer zeroed."""
    if ndim not in CONV_BY_DIM:
        raise LatticeError(f"the vae model supports lattices of dimension 1, 2 or 3, got d = {ndim}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"model.kernel_size: must be a positive odd integer, got {kernel_size}")
    conv = CONV_BY_DIM[ndim]
    widths = [c_in, *hidden, c_out]
    layers: list[nn.Module] = []
    for n, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(conv(a, b, kernel_size, padding=kernel_size // 2, padding_mode="circular"))
        if n < len(widths) - 2:
            layers.append(nn.Tanh())
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, n_batch_dims: int) -> torch.Tensor:
    """log N(x; mean, std^2), summed over all but the first ``n_batch_dims`` dimensions."""
    per_site = -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * LOG_2PI
    return per_site.sum(tuple(range(n_batch_dims, per_site.dim())))


class GaussianVAE(GenerativeModel):
    """Convolutional VAE with a Gaussian decoder; q(phi) estimated by importance sampling."""

    exact_density = False
    requires_data = True

    def __init__(
        self,
        lattice: Lattice,
        latent_channels: int = 1,
        hidden_channels: Sequence[int] = (16, 16),
        kernel_size: int = 3,
        n_importance: int = 4,
        n_train_importance: int = 1,
    ):
        super().__init__(lattice)
        if n_importance < 1 or n_train_importance < 1:
            raise ConfigError(
                f"model.n_importance and model.n_train_importance must be >= 1, got "
                f"{n_importance} and {n_train_importance}"
            )
        if latent_channels < 1:
            raise ConfigError(f"model.latent_channels: must be >= 1, got {latent_channels}")
        d = lattice.ndim
        self.latent_channels = int(latent_channels)
        self.n_importance = int(n_importance)
        self.n_train_importance = int(n_train_importance)
        self.encoder = circular_conv_net(d, 1, 2 * latent_channels, hidden_channels, kernel_size)
        self.decoder = circular_conv_net(d, latent_channels, 2, list(reversed(hidden_channels)), kernel_size)

    # -- the three distributions -------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_channels, *self.lattice.shape)

    def encode(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of r(z | phi), each (B, c_z, *lattice)."""
        out = self.encoder(phi.unsqueeze(1))
        return out[:, : self.latent_channels], bounded_log_scale(out[:, self.latent_channels :])

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of p(phi | z), each (B, *lattice)."""
        out = self.decoder(z)
        return out[:, 0], bounded_log_scale(out[:, 1])

    def _randn(self, shape, generator):
        return torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)

    def _encoder_draws(self, phi, k: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """k reparameterised draws z ~ r(.|phi), shape (k, B, c_z, *L), and log r(z|phi), (k, B)."""
        m, log_s = self.encode(phi)
        z = m + torch.exp(log_s) * self._randn((k, *m.shape), generator)
        return z, gaussian_log_density(z, m, log_s, 2)

    def _log_joint(self, phi: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(phi | z_k) + log p(z_k) for z of shape (k, B, c_z, *L): (k, B)."""
        k, n = z.shape[:2]
        mu, log_sigma = self.decode(z.reshape(k * n, *z.shape[2:]))
        log_lik = gaussian_log_density(phi.expand(k, *phi.shape).reshape(k * n, *phi.shape[1:]), mu, log_sigma, 1)
        log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z), 2)
        return log_lik.reshape(k, n) + log_prior

    def log_weights(self, phi: torch.Tensor, k: int, generator=None) -> torch.Tensor:
        """log w_k = log p(phi|z_k) + log p(z_k) - log r(z_k|phi), z_k ~ r(.|phi): (k, B)."""
        z, log_r = self._encoder_draws(phi, k, generator)
        return self._log_joint(phi, z) - log_r

    # -- GenerativeModel -----------------------------------------------------------------------
    def sample(self, n, generator=None):
        """phi ~ q exactly and log q_hat with the generating latent among the K samples.

        This pairs phi with the extended-space estimate that makes pseudo-marginal IMH exact
        (module docstring); it is NOT a fresh estimate given phi.
        """
        z0 = self._randn((n, *self.latent_shape), generator)
        mu, log_sigma = self.decode(z0)
        phi = mu + torch.exp(log_sigma) * self._randn(mu.shape, generator)
        m, log_s = self.encode(phi)
        log_w0 = (
            gaussian_log_density(phi, mu, log_sigma, 1)
            + gaussian_log_density(z0, torch.zeros_like(z0), torch.zeros_like(z0), 1)
            - gaussian_log_density(z0, m, log_s, 1)
        )
        log_w = log_w0[None]
        if self.n_importance > 1:
            z = m + torch.exp(log_s) * self._randn((self.n_importance - 1, *m.shape), generator)
            rest = self._log_joint(phi, z) - gaussian_log_density(z, m, log_s, 2)
            log_w = torch.cat([log_w, rest])
        return phi, torch.logsumexp(log_w, 0) - math.log(self.n_importance)

    def log_prob(self, phi, generator=None):
        """log of the K-sample importance estimate of q(phi) with fresh encoder draws.

        exp(.) is unbiased for q(phi); the log is biased low (Jensen), by ~ Var/2 for small noise.
        """
        self.lattice.check_field(phi)
        return torch.logsumexp(self.log_weights(phi, self.n_importance, generator), 0) - math.log(
            self.n_importance
        )

    def data_loss(self, phi, generator=None):
        """Negative IWAE bound with n_train_importance samples (1: -ELBO), batch mean."""
        self.lattice.check_field(phi)
        k = self.n_train_importance
        return -(torch.logsumexp(self.log_weights(phi, k, generator), 0) - math.log(k)).mean()
