"""Adam with a step count of its own for every row of `[G, ...]` parameters, so that a row refilled with a new
trajectory in the middle of a run follows torch's Adam exactly as if it had started alone (refill.py).

torch.optim.Adam keeps one step count per tensor; its bias corrections `1 - beta^step` would tie every row of
the chunk to the chunk's age. Here rows are grouped by their own step count and each group is stepped by torch's
functional Adam (`torch.optim.adam.adam`, the same kernels and the same foreach choice as `torch.optim.Adam`), so a
row's update is bit for bit the one `torch.optim.Adam` gives a tensor of that row alone at that step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
from torch.optim.adam import adam
from torch.optim.optimizer import _get_scalar_dtype


class RowAdam(torch.optim.Optimizer):
    """Adam over parameters that share their first dimension (rows); only `update_rows` move at each `step()`.

    `reset_rows(rows)` clears the moments and step count of rows that start a new trajectory; `update_rows`
    (a list of row numbers, set before each `step()`; None: every row) names the rows that take a step; every
    other row (frozen, finished, empty) is left exactly as it is, moments included.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})
        sizes = {p.shape[0] for group in self.param_groups for p in group["params"]}
        if len(sizes) != 1:
            raise ValueError(f"RowAdam's parameters must share their number of rows, got {sorted(sizes)}")
        self.rows = sizes.pop()
        self.row_steps = [0] * self.rows  # Adam steps taken by each row since its last reset
        self.update_rows: list[int] | None = None

    def _moments(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def reset_rows(self, rows: Iterable[int]) -> None:
        """Rows that start over: zero moments, zero steps taken."""
        rows = list(rows)
        if not rows:
            return
        for group in self.param_groups:
            for p in group["params"]:
                state = self._moments(p)
                index = torch.tensor(rows, device=p.device)
                state["exp_avg"][index] = 0
                state["exp_avg_sq"][index] = 0
        for row in rows:
            self.row_steps[row] = 0

    @torch.no_grad()
    def step(self, closure=None):
        """One Adam step for each row of `update_rows` (at that row's own step count); then resets it to None."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        by_count: dict[int, list[int]] = defaultdict(list)
        moving = range(self.rows) if self.update_rows is None else sorted(set(self.update_rows))
        for row in moving:
            by_count[self.row_steps[row]].append(row)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._moments(p)
                for taken, rows in by_count.items():
                    whole = len(rows) == self.rows  # every row at the same count: step the tensors in place
                    index = None if whole else torch.tensor(rows, device=p.device)
                    params = p if whole else p[index]
                    moments = [state[k] if whole else state[k][index] for k in ("exp_avg", "exp_avg_sq")]
                    adam(
                        [params],
                        [p.grad if whole else p.grad[index]],
                        moments[:1],
                        moments[1:],
                        [],
                        [torch.tensor(float(taken), dtype=_get_scalar_dtype())],
                        foreach=None,
                        amsgrad=False,
                        beta1=beta1,
                        beta2=beta2,
                        lr=group["lr"],
                        weight_decay=0.0,
                        eps=group["eps"],
                        maximize=False,
                    )
                    if not whole:
                        p[index] = params
                        state["exp_avg"][index], state["exp_avg_sq"][index] = moments
        for rows in by_count.values():
            for row in rows:
                self.row_steps[row] += 1
        self.update_rows = None
        return loss
