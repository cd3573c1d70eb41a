"""Hook implementations of the generative plugin: models ``autoregressive`` and ``vae``."""

from __future__ import annotations

from lattgen import Param, hookimpl

AUTOREGRESSIVE_PARAMS = (
    Param("hidden_channels", "list[int]", [16, 16], "widths of the masked (causal) hidden conv layers",
          min=1),
    Param("kernel_size", "int", 3, "odd stencil width of each masked periodic convolution", min=3),
    Param("transform", "str", "spline", "one-site conditional: mu + sigma * RQ-spline(z), or affine "
          "mu + sigma z (Gaussian conditionals)", choices=("spline", "affine")),
    Param("n_bins", "int", 8, "spline bins (transform = spline)", min=2),
    Param("tail_bound", "float", 4.0, "spline acts on z in [-B, B], identity outside", min=0,
          min_exclusive=True),
    Param("z2", "str", "none", "Z2 symmetry: none; equivariant (symmetrised net, q(-phi) = q(phi), "
          "2x net cost); symmetrise (q_sym = (q(phi) + q(-phi))/2, +1 log_prob pass per sample)",
          choices=("none", "equivariant", "symmetrise")),
    Param("sampling", "str", "cached", "sample(): cached (one new site per step on cached hidden "
          "columns) or full (V full passes; reference)", choices=("cached", "full")),
)

VAE_PARAMS = (
    Param("latent_channels", "int", 1, "latent channels per lattice site (z has shape (c, *lattice))",
          min=1),
    Param("hidden_channels", "list[int]", [16, 16], "widths of the encoder's hidden circular conv "
          "layers (the decoder's, reversed)", min=1),
    Param("kernel_size", "int", 3, "odd stencil width of the circular convolutions", min=1),
    Param("n_importance", "int", 4, "K importance samples in the estimate of q(phi) per proposal "
          "(cost: K decoder + 1 encoder passes)", min=1),
    Param("n_train_importance", "int", 1, "samples of the training bound: 1 = ELBO, > 1 = IWAE",
          min=1),
)


def make_autoregressive(action, z2="none", **params):
    """Autoregressive flow: raster order, periodic masked convs, exact density (sample: V steps)."""
    from .autoregressive import AutoregressiveModel

    return AutoregressiveModel(action.lattice, z2=z2, **params)


def make_vae(action, **params):
    """Convolutional VAE (Gaussian decoder); q estimated by importance sampling, pseudo-marginal IMH."""
    from .vae import GaussianVAE

    return GaussianVAE(action.lattice, **params)


@hookimpl
def lattgen_register_models(register):
    register("autoregressive", make_autoregressive, params=AUTOREGRESSIVE_PARAMS,
             doc=make_autoregressive.__doc__.strip())
    register("vae", make_vae, params=VAE_PARAMS, doc=make_vae.__doc__.strip())
