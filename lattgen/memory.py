"""Memory up front: refuse a request that cannot fit, with the figure, before anything is allocated.

The estimate is a lower bound: the configurations a run holds at once (a sampler's chains, a
training batch) times the bytes of one configuration (sites x components x element size), with
no allowance for the model, the action or the analysis. A run refused by it could never have
run; a run it lets through may still exhaust memory later, which ``is_out_of_memory`` recognises
so that the CLI reports it as one line too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .errors import ResourceError

#: bytes per lattice site when nothing else is known: one float32, the smallest field element
MIN_BYTES_PER_SITE = 4


def total_memory_bytes(device: str = "cpu") -> int | None:
    """Physical memory of the host, or of the GPU for a cuda device (None if it cannot be read)."""
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
                return int(torch.cuda.get_device_properties(index).total_memory)
        except (RuntimeError, ValueError, AssertionError):
            return None
        return None
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def format_bytes(n: float) -> str:
    """'1.5 TiB', '24 GiB', '512 MiB' (binary units, 2 significant digits)."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2g} {unit}"
    return f"{int(n)} B"


def check_fits(lattice: Sequence[int], n_configs: int = 1, bytes_per_site: int = MIN_BYTES_PER_SITE,
               *, where: str = "action.lattice", what: str = "one configuration", device: str = "cpu",
               hint: str = "use a smaller lattice") -> None:
    """ResourceError if ``n_configs`` configurations of ``lattice`` cannot fit into the device's memory."""
    sites = math.prod(int(n) for n in lattice)
    need = sites * int(bytes_per_site) * int(n_configs)
    have = total_memory_bytes(device)
    if have is not None and need > have:
        raise ResourceError(
            f"{where}: {list(lattice)} has {sites:.3g} sites; {what} needs at least {format_bytes(need)} "
            f"but this machine's {'GPU' if device.startswith('cuda') else 'memory'} is {format_bytes(have)}; "
            f"{hint}"
        )


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (MemoryError, torch's out-of-memory errors)."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA, MPS)
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)
