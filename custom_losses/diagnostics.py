"""Distillation diagnostics: the balance of the terms of eq. 8 and a measure of degenerate masks.

* :func:`flip_rate` - how often 4-neighbours disagree around the predicted foreground (a checkerboard: ~1).
* :func:`term_gradients` - the gradient each weighted term puts on the student's parameters, and its
  cosine with the segmentation loss's gradient.
* :class:`DistillationDiagnostics` - an ignite handler that asks :class:`tools.engines.DistillationTrainer` for
  both every ``interval`` iterations; the values land in the trainer's output as ``diag_*`` keys, which
  :func:`tools.engines.loss_terms` hands to StatsHandler and TensorBoardStatsHandler.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

import torch

__all__ = ["DIAGNOSE_FLAG", "DistillationDiagnostics", "flip_rate", "term_gradients"]

# attribute of ``engine.state`` that asks the iteration for diagnostics
DIAGNOSE_FLAG = "diagnose_distillation"


def flip_rate(labels: torch.Tensor, foreground: int = 1) -> torch.Tensor:
    """Fraction of 4-neighbour pairs touching the predicted foreground whose two labels differ.

    With ``F`` the pixels labelled ``foreground`` and ``E`` the horizontal and vertical neighbour pairs
    ``(i, j)`` with ``i in F`` or ``j in F`` (all images of the batch pooled),

    .. math::
        r = \\frac{|\\{(i, j) \\in E : y_i \\ne y_j\\}|}{|E|}.

    A filled region of area ``A`` and perimeter ``P`` (in pixel edges) away from the image border gives
    ``P / (2A + P / 2)``: ``2 / (s + 1)`` for an ``s x s`` square, about 0.12 for a disc of radius 10 px. A period-2
    checkerboard gives 1, period-2 stripes 2/3 (every pair across the stripes flips). No foreground gives 0.

    Args:
        labels: integer label map ``(B, 1, H, W)`` or ``(B, H, W)``.
        foreground: the label of the foreground.

    Returns:
        a float32 scalar tensor in ``[0, 1]``.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.dim() == 4:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must have shape (B, 1, H, W) or (B, H, W), got {tuple(labels.shape)}.")
        labels = labels[:, 0]
    if labels.dim() != 3:
        raise ValueError(f"labels must have shape (B, 1, H, W) or (B, H, W), got {tuple(labels.shape)}.")
    fg = labels == foreground
    flips = labels.new_zeros((), dtype=torch.float32)
    pairs = labels.new_zeros((), dtype=torch.float32)
    for a, b, fa, fb in (
        (labels[:, 1:, :], labels[:, :-1, :], fg[:, 1:, :], fg[:, :-1, :]),
        (labels[:, :, 1:], labels[:, :, :-1], fg[:, :, 1:], fg[:, :, :-1]),
    ):
        touching = fa | fb
        flips = flips + ((a != b) & touching).sum()
        pairs = pairs + touching.sum()
    return flips / pairs.clamp_min(1.0)


def term_gradients(
    terms: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    parameters: Iterable[torch.Tensor],
    reference: str = "seg",
) -> Dict[str, torch.Tensor]:
    """Norm of the gradient of each weighted term on ``parameters``, and its cosine with ``reference``'s.

    For each ``name`` of ``weights`` (with weight ``w``) whose term needs a gradient, ``g = d(w * terms[name]) /
    d(parameters)`` (flattened over all parameters) is computed with ``retain_graph=True``, so the graph still
    serves the training step's own backward. Returns ``grad_norm_<name> = ||g||`` and, for names other than
    ``reference``, ``grad_cos_<name> = <g, g_ref> / (||g|| ||g_ref||)`` (0 when either is 0). Every value is a
    detached float32 scalar.

    Args:
        terms: the unweighted terms (e.g. Seg and :meth:`DistillationLoss.forward_terms`).
        weights: the weight of each term in the total; names absent here are skipped.
        parameters: the parameters whose gradient is measured (the student's, not the teacher's).
        reference: the term every cosine is taken with.
    """
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("term_gradients needs at least one parameter that requires a gradient.")
    if reference not in weights:
        raise ValueError(f"reference {reference!r} is not among the weighted terms {sorted(weights)}.")
    flat: Dict[str, torch.Tensor] = {}
    for name, weight in weights.items():
        if name not in terms:
            raise ValueError(f"weights names {name!r}, which is not among the terms {sorted(terms)}.")
        term = terms[name]
        if not term.requires_grad:
            continue
        grads = torch.autograd.grad(float(weight) * term, params, retain_graph=True, allow_unused=True)
        flat[name] = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params)]
        )
    out: Dict[str, torch.Tensor] = {}
    ref = flat.get(reference)
    for name, g in flat.items():
        norm = g.norm()
        out[f"grad_norm_{name}"] = norm.detach()
        if name != reference and ref is not None:
            denominator = norm * ref.norm()
            cosine = (g @ ref) / denominator if denominator > 0 else g.new_zeros(())
            out[f"grad_cos_{name}"] = cosine.detach()
    return out


class DistillationDiagnostics:
    """Ignite handler: every ``interval`` iterations (the first one included), ask the distillation step for
    its diagnostics.

    On ``ITERATION_STARTED`` it sets ``engine.state.diagnose_distillation``; :class:`tools.engines.DistillationTrainer`
    then adds to its output, before the step's backward, each term's gradient norm on the student and cosine with
    Seg's gradient (:func:`term_gradients`) and the flip rate of the student's predicted labels on the batch
    (:func:`flip_rate`), as ``diag_*`` keys. The bundle's StatsHandler and TensorBoardStatsHandler log them through
    :func:`tools.engines.loss_terms`. A diagnosed iteration
    costs one extra backward per active term; ``interval=0`` switches the handler off.

    Args:
        interval: iterations between two diagnosed iterations (0: never).
    """

    def __init__(self, interval: int = 10) -> None:
        if int(interval) != interval or interval < 0:
            raise ValueError(f"interval must be a non-negative integer, got {interval!r}.")
        self.interval = int(interval)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if self.interval == 0:
            return
        engine.add_event_handler(Events.ITERATION_STARTED, self._request)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._clear)

    def _request(self, engine: Any) -> None:
        setattr(engine.state, DIAGNOSE_FLAG, (engine.state.iteration - 1) % self.interval == 0)

    @staticmethod
    def _clear(engine: Any) -> None:
        setattr(engine.state, DIAGNOSE_FLAG, False)
