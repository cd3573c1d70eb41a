"""Ensembles on disk: the measured configurations of a run in one HDF5 file (h5py).

``lattgen sample ... --save-configs [--save-every K]`` writes ``OUT/ensemble.h5``::

    /                        attributes: format = "lattgen-ensemble", format_version, config
                             (the resolved config as TOML), config_json, lattgen_version, seed,
                             sampler, field_space, manifold, field_shape, lattice, dtype, n_chains,
                             n_therm, measure_every, save_every, n_steps_valid, complete,
                             acceptance, sampler_info (JSON), metadata (JSON, lattgen/metadata.py)
    /configs/chain_0000      (n_steps, *field_shape) in the run's dtype (float or complex), one
    /configs/chain_0001      dataset per chain, chunked along the steps, gzip level 1 + shuffle
    ...
    /accepted                (n_steps, n_chains) float64: the step's acceptance (0/1 for a
                             Metropolis test; the mean over measure_every steps when > 1)
    /log_weight              (n_steps, n_chains) float64, samplers with a ``log_weight`` (IMH):
                             log w = -S - log q of each chain's state (before a symmetry move)

The core knows no theory: shape and dtype come from the action's ``FieldSpace`` (real fields,
link angles, complex unit vectors alike) and loaded blocks are validated by ``FieldSpace.check``
(NaN, angles outside (-pi, pi], vectors off the sphere).

Incremental writing: the configurations are buffered on the device (no host copy per step) and
written a block at a time (``block_steps`` steps, or sooner once ``flush_every_s`` seconds have
passed); after each block the datasets are extended, ``n_steps_valid`` updated and the file
flushed. A run killed between blocks leaves a readable file with every block written before;
``complete`` stays False until the run finishes. Readers open the file read-only and use the
first ``n_steps_valid`` steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import LattgenError, LatticeError
from .field import FieldSpace

FORMAT = "lattgen-ensemble"
FORMAT_VERSION = 1
ENSEMBLE = "ensemble.h5"
#: bytes of configurations buffered on the device before a block is written
BLOCK_BYTES = 8 << 20
#: bytes of one chunk of a chain's dataset (HDF5 reads and compresses whole chunks)
CHUNK_BYTES = 1 << 18


class EnsembleError(LattgenError):
    """An ensemble file that cannot be read or does not fit (truncated, foreign, mismatched)."""


def chain_name(chain: int, n_chains: int) -> str:
    """The dataset name of chain ``chain`` under /configs (zero-padded: sorted names = chain order)."""
    return f"chain_{chain:0{max(4, len(str(n_chains - 1)))}d}"


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - a dependency
        raise EnsembleError("saving or reading ensembles needs h5py: pip install h5py") from None
    return h5py


class EnsembleWriter:
    """``run_chain``'s ``record`` callback writing every ``save_every``-th measured configuration.

    ``config`` is the resolved config (stored as TOML and JSON); ``space`` the action's field
    space; ``dtype`` the run's real dtype (the stored element type follows ``space.dtype``);
    ``compress``: gzip (level 1, shuffled) the configurations, else store them raw (faster).
    Call ``close(chain)`` when the run ends (``complete`` = True, acceptance, sampler info), or
    ``abort()`` when it fails (what was written stays, ``complete`` False).
    """

    def __init__(self, path: str | Path, space: FieldSpace, *, n_chains: int, config: Mapping[str, Any],
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                 save_every: int = 1, n_planned: int | None = None, n_therm: int | None = None,
                 metadata: Mapping[str, Any] | None = None, block_steps: int | None = None, flush_every_s: float = 30.0, compress: bool = True):
        from .config import dumps_toml
        from .jsonio import to_jsonable

        if int(save_every) < 1:
            raise EnsembleError(f"--save-every: must be >= 1, got {save_every}")
        h5py = _h5py()
        self.path = Path(path)
        self.space = space
        self.n_chains = int(n_chains)
        self.save_every = int(save_every)
        self.element = space.dtype(dtype)
        self.device = torch.device(device)
        itemsize = torch.empty((), dtype=self.element).element_size()
        per_step = max(1, self.n_chains * space.numel * itemsize)
        self.block_steps = int(block_steps or min(4096, max(1, BLOCK_BYTES // per_step)))
        self.flush_every_s = float(flush_every_s)
        chunk = min(max(1, CHUNK_BYTES // max(1, space.numel * itemsize)), 4096)
        run = config.get("run", {})
        try:
            self._file = h5py.File(self.path, "w")
        except OSError as exc:
            raise EnsembleError(f"{self.path}: cannot create the ensemble file ({exc})") from None
        f = self._file
        attrs = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "lattgen_version": __version__,
            "config": dumps_toml(config), "config_json": json.dumps(to_jsonable(config)),
            "seed": int(run.get("seed", 0)), "sampler": str(config.get("sampler", {}).get("name", "")),
            "field_space": type(space).__name__, "manifold": space.manifold,
            "field_shape": np.asarray(space.shape, dtype=np.int64),
            "lattice": np.asarray(space.lattice.shape, dtype=np.int64),
            "dtype": str(self.element).replace("torch.", ""), "n_chains": self.n_chains,
            "n_therm": int(n_therm if n_therm is not None else
                           (run["n_therm"] if run.get("n_therm") is not None else -1)),
            "measure_every": int(run.get("measure_every", 1)), "save_every": self.save_every,
            "n_steps_planned": -1 if n_planned is None else int(n_planned),
            "n_steps_valid": 0, "complete": False, "acceptance": np.nan,
            "metadata": json.dumps(to_jsonable(metadata or {})),
        }
        f.attrs.update(attrs)
        np_dtype = torch.empty((), dtype=self.element).numpy().dtype
        #: gzip level 1 with byte shuffling: the fastest gzip; float64 Monte Carlo fields compress to
        #: 0.7-0.9 at any level (docs/benchmarks.md), so a higher level only costs time
        self._filters = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compress else {}
        group = f.create_group("configs")
        for c in range(self.n_chains):
            group.create_dataset(chain_name(c, self.n_chains), shape=(0, *space.shape),
                                 maxshape=(None, *space.shape), dtype=np_dtype,
                                 chunks=(chunk, *space.shape), **self._filters)
        f.create_dataset("accepted", shape=(0, self.n_chains), maxshape=(None, self.n_chains),
                         dtype=np.float64, chunks=(max(1, min(4096, CHUNK_BYTES // (8 * self.n_chains))),
                                                   self.n_chains), compression="gzip")
        self._buf = torch.empty((self.block_steps, self.n_chains, *space.shape), dtype=self.element,
                                device=self.device)
        self._acc = torch.empty((self.block_steps, self.n_chains), dtype=torch.float64, device=self.device)
        self._lw: torch.Tensor | None = None
        self._pos = 0
        self._seen = 0
        self.n_written = 0
        self._last_flush = time.monotonic()
        f.flush()

    # -- run_chain's record callback ------------------------------------------------------------
    def __call__(self, sampler, accepted: torch.Tensor) -> None:
        seen, self._seen = self._seen, self._seen + 1
        if seen % self.save_every:
            return
        self._buf[self._pos].copy_(sampler.state)  # on the device: no host sync
        self._acc[self._pos].copy_(accepted)
        log_w = getattr(sampler, "log_weight", None)
        if isinstance(log_w, torch.Tensor):
            if self._lw is None:
                self._lw = torch.full((self.block_steps, self.n_chains), math.nan, dtype=torch.float64,
                                      device=self.device)
            self._lw[self._pos].copy_(log_w)
        self._pos += 1
        if self._pos == self.block_steps or time.monotonic() - self._last_flush > self.flush_every_s:
            self.flush()

    # -- writing ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered block (one host copy), extend the datasets, update n_steps_valid."""
        n = self._pos
        if n == 0:
            return
        f = self._file
        block = self._buf[:n].cpu().numpy()
        lo, hi = self.n_written, self.n_written + n
        group = f["configs"]
        for c in range(self.n_chains):
            ds = group[chain_name(c, self.n_chains)]
            ds.resize(hi, axis=0)
            ds[lo:hi] = block[:, c]
        self._append("accepted", self._acc[:n].cpu().numpy())
        if self._lw is not None:
            if "log_weight" not in f:
                f.create_dataset("log_weight", shape=(0, self.n_chains), maxshape=(None, self.n_chains),
                                 dtype=np.float64, chunks=f["accepted"].chunks, compression="gzip")
            self._append("log_weight", self._lw[:n].cpu().numpy())
        self.n_written = hi
        f.attrs["n_steps_valid"] = hi
        f.flush()
        self._pos = 0
        self._last_flush = time.monotonic()

    def _append(self, name: str, values: np.ndarray) -> None:
        ds = self._file[name]
        lo = ds.shape[0]
        ds.resize(lo + values.shape[0], axis=0)
        ds[lo:] = values

    def close(self, chain=None) -> None:
        """The last block, then ``complete`` = True with the run's acceptance and sampler info."""
        from .jsonio import to_jsonable

        if self._file is None:
            return
        self.flush()
        if chain is not None:
            self._file.attrs["acceptance"] = float(chain.acceptance)
            self._file.attrs["sampler_info"] = json.dumps(to_jsonable(chain.info))
            self._file.attrs["wall_time_s"] = float(chain.wall_time_s)
        self._file.attrs["complete"] = True
        self._file.close()
        self._file = None

    def abort(self) -> None:
        """Close after a failure: the blocks written stay readable, ``complete`` stays False."""
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            self._file.close()
            self._file = None


# -- reading -------------------------------------------------------------------------------------
class Ensemble:
    """A saved ensemble opened read-only (a context manager); the file is never modified.

    ``config``: the resolved config it was sampled with; ``n_steps``: the valid steps per chain;
    ``complete``: False for an interrupted run. Opening checks the format and every dataset;
    ``check_space`` checks the configurations fit an action's field space.
    """

    def __init__(self, path: str | Path):
        h5py = _h5py()
        self.path = Path(path)
        if not self.path.is_file():
            raise EnsembleError(f"{str(self.path)!r} is not a file; an ensemble is the ensemble.h5 that "
                                "`lattgen sample ... --save-configs` writes")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            if "unable to lock file" in str(exc).lower():  # HDF5's file lock: a writer has it open
                raise EnsembleError(f"{self.path} is open for writing by another process (a running "
                                    "`lattgen sample --save-configs`?); wait for it to finish") from None
            raise EnsembleError(f"{self.path} is not a readable HDF5 file (truncated or not HDF5: "
                                f"{str(exc).splitlines()[0]})") from None
        try:
            attrs = dict(self._file.attrs)
            if attrs.get("format") != FORMAT:
                raise EnsembleError(f"{self.path} is an HDF5 file but not a lattgen ensemble (no "
                                    f"format = {FORMAT!r} attribute)")
            if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
                raise EnsembleError(f"{self.path}: ensemble format version {attrs['format_version']} is newer "
                                    f"than this lattgen reads ({FORMAT_VERSION}); upgrade lattgen")
            self.attrs = attrs
            self.config = json.loads(attrs["config_json"])
            self.n_chains = int(attrs["n_chains"])
            self.field_shape = tuple(int(s) for s in attrs["field_shape"])
            self.complete = bool(attrs["complete"])
            self._check_datasets(int(attrs["n_steps_valid"]))
        except EnsembleError:
            self.close()
            raise
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
            self.close()
            raise EnsembleError(f"{self.path}: damaged lattgen ensemble ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else 'missing entry'})") from None

    def _check_datasets(self, valid: int) -> None:
        f = self._file
        missing = [name for name in ("configs", "accepted") if name not in f]
        missing += [f"configs/{chain_name(c, self.n_chains)}" for c in range(self.n_chains)
                    if "configs" in f and chain_name(c, self.n_chains) not in f["configs"]]
        if missing:
            raise EnsembleError(f"{self.path}: the dataset {missing[0]} is missing "
                                f"({len(missing)} missing); the file is damaged")
        lengths = {f["configs"][chain_name(c, self.n_chains)].shape[0] for c in range(self.n_chains)}
        lengths.add(f["accepted"].shape[0])
        self.n_steps = min(valid, *lengths)
        for c in range(self.n_chains):
            shape = f["configs"][chain_name(c, self.n_chains)].shape[1:]
            if tuple(shape) != self.field_shape:
                raise EnsembleError(f"{self.path}: configs/{chain_name(c, self.n_chains)} holds configurations "
                                    f"of shape {tuple(shape)}, the file says {self.field_shape}")

    def __enter__(self) -> Ensemble:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    @property
    def is_complex(self) -> bool:
        return np.issubdtype(self._file["configs"][chain_name(0, self.n_chains)].dtype, np.complexfloating)

    def check_space(self, space: FieldSpace) -> None:
        """EnsembleError unless the stored configurations are configurations of ``space``."""
        if self.field_shape != tuple(space.shape) or self.is_complex != space.complex:
            kind = "complex" if self.is_complex else "real"
            raise EnsembleError(
                f"{self.path} holds {kind} configurations of shape {self.field_shape}, but its action "
                f"{self.config.get('action', {}).get('name')!r} on lattice {list(space.lattice.shape)} has "
                f"{space!r}: an ensemble of another theory or lattice")

    def blocks(self, space: FieldSpace, block_steps: int = 256) -> Iterator[tuple[int, torch.Tensor]]:
        """(first step, configurations (steps, n_chains, *shape)) over the valid steps in the stored
        dtype (the run's), each block validated by ``space.check`` (NaN, values off the manifold:
        EnsembleError naming the chain)."""
        self.check_space(space)
        group = self._file["configs"]
        names = [chain_name(c, self.n_chains) for c in range(self.n_chains)]
        for lo in range(0, self.n_steps, block_steps):
            hi = min(self.n_steps, lo + block_steps)
            try:
                arrays = [group[n][lo:hi] for n in names]
            except (OSError, RuntimeError) as exc:
                raise EnsembleError(f"{self.path}: steps {lo}..{hi - 1} cannot be read "
                                    f"({str(exc).splitlines()[0]}); the file is damaged") from None
            phi = torch.from_numpy(np.stack(arrays, axis=1))
            for c in range(self.n_chains):
                try:
                    space.check(phi[:, c], what=f"configs/{names[c]} (steps {lo}..{hi - 1})")
                except LatticeError as exc:
                    raise EnsembleError(f"{self.path}: {exc}") from None
            yield lo, phi

    def accepted(self) -> np.ndarray:
        """(n_steps, n_chains) float64 acceptance of the saved steps."""
        return np.asarray(self._file["accepted"][: self.n_steps], dtype=np.float64)

    def log_weight(self) -> np.ndarray | None:
        """(n_steps, n_chains) float64 log-weights (IMH runs), else None."""
        if "log_weight" not in self._file:
            return None
        return np.asarray(self._file["log_weight"][: self.n_steps], dtype=np.float64)

    def info(self) -> dict[str, Any]:
        """The sampler info recorded when the run finished ({} for an interrupted run)."""
        text = self.attrs.get("sampler_info")
        return json.loads(text) if text else {}
