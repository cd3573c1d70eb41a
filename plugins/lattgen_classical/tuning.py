"""Step-size adaptation during thermalisation, frozen afterwards so the chain stays exact."""

from __future__ import annotations

import math


class DualAveraging:
    """Nesterov dual averaging of log(x) towards a target acceptance (Hoffman & Gelman 2014, Alg. 5).

    ``update(alpha)`` takes the mean acceptance probability of the last step and returns the next x;
    ``final`` is the averaged iterate exp(log x_bar), the value to freeze after tuning. x is clamped
    to [lower, upper]. Larger acceptance than the target pushes x up. gamma = 0.2 rather than the
    paper's 0.05: our acceptance is averaged over many chains, hence nearly noise-free, and the
    smaller gain converges in ~100 updates without overshooting (measured on phi^4, L = 6).
    """

    def __init__(self, initial: float, target: float, lower: float = 0.0, upper: float = math.inf,
                 gamma: float = 0.2, t0: float = 10.0, kappa: float = 0.75):
        if not initial > 0:
            raise ValueError(f"initial value must be > 0, got {initial}")
        self.target = float(target)
        self.log_lower = math.log(lower) if lower > 0 else -math.inf
        self.log_upper = math.log(upper) if upper < math.inf else math.inf
        self.mu = math.log(10.0 * initial)  # shrink towards larger steps, as in the paper
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.t = 0
        self.h_bar = 0.0
        self.log_x = self._clamp(math.log(initial))
        self.log_x_bar = self.log_x

    def _clamp(self, log_x: float) -> float:
        return min(max(log_x, self.log_lower), self.log_upper)

    @property
    def current(self) -> float:
        """The value to use for the next step while tuning."""
        return math.exp(self.log_x)

    @property
    def final(self) -> float:
        """The averaged value to freeze once tuning ends."""
        return math.exp(self.log_x_bar)

    def update(self, acceptance: float) -> float:
        """Record the acceptance obtained with ``current``; return the next value to try."""
        if not math.isfinite(acceptance):
            acceptance = 0.0
        self.t += 1
        t = self.t
        w = 1.0 / (t + self.t0)
        self.h_bar = (1.0 - w) * self.h_bar + w * (self.target - acceptance)
        self.log_x = self._clamp(self.mu - math.sqrt(t) / self.gamma * self.h_bar)
        eta = t ** (-self.kappa)
        self.log_x_bar = self._clamp(eta * self.log_x + (1.0 - eta) * self.log_x_bar)
        return self.current
