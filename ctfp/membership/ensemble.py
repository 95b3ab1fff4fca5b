"""Membership by the weighted mean of several scorers' standardised scores (what
``--method auto`` answers with when other scorers add to the best).

Scorers that see different traces of memorisation err on different slices; a weighted mean
keeps what they share (Caruana et al. 2004; the weights are chosen by
:func:`ctfp.membership.selection.forward_select`). Their scores live on different scales, so
each is first standardised (:func:`robust_scale`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctfp.evaluate import stratified_folds
from ctfp.membership.base import MembershipMethod

#: Folds of the out-of-fold scores that standardise a label-using member without a given scale.
FOLDS = 5


def robust_scale(scores: np.ndarray) -> tuple[float, float]:
    """(median, interquartile range) of ``scores``; the range falls back to the standard
    deviation, then 1, when the scores are (nearly) constant."""
    q1, median, q3 = np.percentile(np.asarray(scores, dtype=np.float64), [25, 50, 75])
    scale = float(q3 - q1)
    if not scale > 0:
        scale = float(np.std(scores))
    return float(median), scale if scale > 0 else 1.0


@dataclass(kw_only=True, eq=False, repr=False)
class EnsembleMembership(MembershipMethod):
    """The weighted mean of the standardised scores of several membership methods on the same
    features.

    ``members``: one mapping per member: ``method`` (a registered name), ``params`` (its
    ``__init__`` keywords), optionally ``weight`` (positive, default 1; normalised to sum to 1)
    and optionally both ``center`` and ``scale`` of its scores; without them ``fit`` takes the
    median and interquartile range of its training scores, out of fold (``FOLDS`` folds) when
    the member learns from the labels. ``calibrate``: the threshold criterion on the combined
    training scores; ``random_state`` and ``device`` go to the members that take them.

    Fitted: ``members_``, ``centers_`` and ``scales_``, ``weights_`` (summing to 1) and
    ``train_scores_``, the combined scores the threshold was chosen on.
    """

    name = "ensemble"
    #: The members are saved as "specs", beside their fitted states under "members".
    unsaved_params = ("device", "members")
    saved_state: ClassVar[Mapping[str, str]] = {
        "threshold_": "threshold",
        "n_features_in_": "n_features_in",
        "classes_": "classes",
    }

    members: Sequence[Mapping[str, Any]] = ()
    calibrate: str = "balanced"
    random_state: int = 0
    device: str = "auto"

    @property
    def needs_generated(self) -> bool:  # type: ignore[override]
        return any(self._member_class(m).needs_generated for m in self.members)

    @property
    def needs_members(self) -> bool:  # type: ignore[override]
        return any(self._member_class(m).needs_members for m in self.members)

    @property
    def uses_labels(self) -> bool:
        return any(self._build(m).uses_labels for m in self.members)

    @staticmethod
    def _member_class(member: Mapping[str, Any]) -> type[MembershipMethod]:
        from ctfp.membership.registry import get_method

        if not isinstance(member, Mapping) or "method" not in member:
            raise ValueError(f"an ensemble member is a mapping with a 'method', got {member!r}")
        if member["method"] == EnsembleMembership.name:
            raise ValueError("an ensemble member cannot itself be an ensemble")
        return get_method(str(member["method"]))

    def _build(self, member: Mapping[str, Any]) -> MembershipMethod:
        from ctfp.membership.registry import instantiate

        cls = self._member_class(member)
        return instantiate(cls, member.get("params") or {}, self.random_state, self.device)

    def fit(self, X: Any, y: Any, generated: Any = None) -> EnsembleMembership:
        """Fit every member on all of ``X`` (n, d), ``y``, ``generated``; standardise and
        combine their scores; choose the threshold on the combined training scores."""
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        x, y, g = self._fit_inputs(X, y, generated)
        given = [("center" in m) + ("scale" in m) for m in self.members]
        if any(n == 1 for n in given):
            raise ValueError("an ensemble member gives both 'center' and 'scale', or neither")
        weights = self._weights()
        members, centers, scales, train = [], [], [], []
        folds = min(FOLDS, int(min(y.sum(), (y == 0).sum())))
        for member in self.members:
            model = self._build(member).fit(x, y, g)
            if "center" in member or not model.uses_labels or folds < 2:
                scores = model.score_samples(x)
            else:  # the member learns from the labels: its training scores out of fold
                fold = stratified_folds(y, folds, self.random_state)
                scores = np.empty(len(y))
                for f in range(folds):
                    test = fold == f
                    part = self._build(member).fit(x[~test], y[~test], g)
                    scores[test] = part.score_samples(x[test])
            if "center" in member:
                center, scale = float(member["center"]), float(member["scale"])
                if not (np.isfinite(center) and np.isfinite(scale) and scale > 0):
                    raise ValueError(
                        f"ensemble member {member['method']}: center and scale must be finite "
                        f"and the scale positive, got {center!r}, {scale!r}"
                    )
            else:
                center, scale = robust_scale(scores)
            members.append(model)
            centers.append(center)
            scales.append(scale)
            train.append((scores - center) / scale)
        self.members_ = members
        self.centers_ = np.asarray(centers, dtype=np.float64)
        self.scales_ = np.asarray(scales, dtype=np.float64)
        self.weights_ = weights
        return self._calibrate(weights @ np.asarray(train), y)

    def _weights(self) -> np.ndarray:
        """The members' weights (``weight``, default 1), normalised to sum to 1."""
        weights = np.empty(len(self.members))
        for i, member in enumerate(self.members):
            try:
                weights[i] = float(member.get("weight", 1.0))
            except (TypeError, ValueError):
                weights[i] = np.nan
            if not (np.isfinite(weights[i]) and weights[i] > 0):
                raise ValueError(
                    f"ensemble member {member.get('method')}: weight must be a finite positive "
                    f"number, got {member.get('weight')!r}"
                )
        return weights / weights.sum()

    def _score(self, x: np.ndarray) -> np.ndarray:
        parts = [
            (m.score_samples(x, check_input=False) - c) / s
            for m, c, s in zip(self.members_, self.centers_, self.scales_, strict=True)
        ]
        return self.weights_ @ np.asarray(parts)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params, arrays = super().to_state()
        params["members"], params["specs"] = [], []
        for i, (spec, model) in enumerate(zip(self.members, self.members_, strict=True)):
            member_params, member_arrays = model.to_state()
            method, weight = str(spec["method"]), float(self.weights_[i])
            params["members"].append(
                {
                    "method": method,
                    "params": member_params,
                    "center": float(self.centers_[i]),
                    "scale": float(self.scales_[i]),
                    "weight": weight,
                }
            )
            params["specs"].append(
                {"method": method, "params": dict(spec.get("params") or {}), "weight": weight}
            )
            arrays.update({f"member{i}/{k}": v for k, v in member_arrays.items()})
        return params, arrays

    @classmethod
    def from_state(
        cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *, device: str = "auto"
    ) -> EnsembleMembership:
        from ctfp.membership.registry import get_method

        self = super().from_state(params, arrays, device=device)
        self.members = params["specs"]
        saved = params["members"]
        self.members_ = []
        for i, member in enumerate(saved):
            prefix = f"member{i}/"
            own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            kind = get_method(member["method"])
            self.members_.append(kind.from_state(member["params"], own, device=device))
        self.centers_ = np.array([m["center"] for m in saved], dtype=np.float64)
        self.scales_ = np.array([m["scale"] for m in saved], dtype=np.float64)
        weights = np.array([m.get("weight", 1.0) for m in saved], dtype=np.float64)  # or older
        self.weights_ = weights / weights.sum()
        return self


__all__ = ["FOLDS", "EnsembleMembership", "robust_scale"]
