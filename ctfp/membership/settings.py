"""What a task 1 (membership) run does: the method, its options, k, seed and device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctfp.device import check_device_name
from ctfp.membership.options import SelectionSettings
from ctfp.membership.registry import REGISTRY, get_method, options_of, parameter_names
from ctfp.settings import Settings, SettingsError, option, parse_ints

if TYPE_CHECKING:
    from ctfp.membership.base import MembershipMethod

AUTO = "auto"
#: The seed paper's best k, the centroid method's default.
DEFAULT_K = 4


def options_class(method: str) -> type[Settings] | None:
    """The options class of ``method``: SelectionSettings for auto, else the method's own."""
    return SelectionSettings if method == AUTO else options_of(method)


def option_classes() -> list[type[Settings]]:
    """Every options class a task 1 run may take (auto's and each method's), once each."""
    options = (o for _, o in REGISTRY.values() if o is not None)
    return list(dict.fromkeys([SelectionSettings, *options]))


def takes_k(method: str) -> bool:
    return method != AUTO and "k" in parameter_names(get_method(method))


@dataclass(frozen=True)
class Task1Settings(Settings):
    """A task 1 run: ``method`` with its ``options`` (an instance of its ``settings_class``;
    None: its defaults), the k values of methods that take one (one fit per k), seed and
    device."""

    stage = "task1"

    method: str = option(
        "auto",
        "auto: choose features, method and settings by cross-validation on the labelled "
        "training reals; centroid: the seed paper (k-means centres per class, L1 1-NN); "
        "proximity: distance to the generated set; density, counting, reconstruction: see README",
        choices=(AUTO, *REGISTRY),
    )
    k: tuple[int, ...] = option(
        (),
        "centroid: clusters per class (default 4), or a list like 1,2,4,8,16,32 (one fit each)",
        parse=parse_ints,
        metavar="K",
    )
    seed: int = option(0, "seed of the fit (k-means restarts, sampling)")
    device: str = option("auto", "auto|cpu|cuda or cuda:N for the fit", check=check_device_name)
    options: Settings | None = option(None, "the method's options", cli=False)

    def validate(self) -> None:
        if any(not isinstance(v, int) or v < 1 for v in self.k):
            raise SettingsError(f"Task1Settings.k must be positive integers, got {self.k!r}")
        if self.k and self.method == AUTO:
            import warnings

            warnings.warn(
                "k with method 'auto' is ignored and will be refused in the next release: the "
                "seed method (centroid) is no longer one of auto's candidates, since its answer "
                "does not examine the generator; run --method centroid --k ... for it",
                FutureWarning,
                stacklevel=2,
            )
        elif self.k and not takes_k(self.method):
            raise SettingsError(f"method {self.method!r} has no k; --k is for centroid")
        wanted = options_class(self.method)
        if self.options is None:
            if wanted is not None:
                object.__setattr__(self, "options", wanted())
        elif wanted is None or not isinstance(self.options, wanted):
            raise SettingsError(
                f"method {self.method!r} takes "
                f"{'no options' if wanted is None else wanted.__name__}, not "
                f"{type(self.options).__name__}"
            )

    @property
    def ks(self) -> list[int]:
        """The k of each fit: one (the first) for methods without a k."""
        if takes_k(self.method):
            return list(self.k) or [DEFAULT_K]
        return [DEFAULT_K]  # one fit; the number only names it in summary.json

    def build(self, k: int | None = None) -> MembershipMethod:
        """The (unfitted) method these settings describe, with ``k`` (default the first),
        seeded and on the device, as a run builds it."""
        from ctfp.membership.selection import build, candidate

        if self.method == AUTO:
            raise SettingsError("method 'auto' is a selection among methods, not one to build")
        params: dict[str, Any] = dict(self.options.to_dict()) if self.options else {}
        if takes_k(self.method):
            params["k"] = self.ks[0] if k is None else k
        return build(candidate("", self.method, params), self.seed, self.device)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        values["options"] = self.options.to_dict() if self.options is not None else None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Task1Settings:
        values = dict(values)
        options = values.pop("options", None)
        method = values.get("method", AUTO)
        wanted = options_class(method)
        if options is not None and wanted is not None:
            values["options"] = wanted.from_dict(options)
        return super().from_dict(values)

    @classmethod
    def with_options(cls, **values: Any) -> Task1Settings:
        """Settings from flat keywords: Task1Settings fields, and the chosen method's options
        (e.g. ``with_options(method="proximity", metric="l2")``); an option of another method,
        or of none, is refused."""
        own = {n: values.pop(n) for n in list(values) if n in cls.field_names()}
        if "k" in own and isinstance(own["k"], int):
            own["k"] = (own["k"],)
        method = own.get("method", AUTO)
        wanted = options_class(method)
        if values:
            valid = set(wanted.field_names()) if wanted is not None else set()
            wrong = sorted(set(values) - valid)
            if wrong:
                raise SettingsError(
                    f"{', '.join(wrong)}: not an option of method {method!r} (its options: "
                    f"{', '.join(sorted(valid)) or 'none'})"
                )
            own["options"] = wanted.from_dict(values)  # type: ignore[union-attr]
        return cls(**own)


__all__ = ["AUTO", "Task1Settings", "option_classes", "options_class", "takes_k"]
