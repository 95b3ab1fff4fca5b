"""Where a run executes: the settings of the engine (distributor) that runs it."""

from __future__ import annotations

from dataclasses import dataclass

from ctfp.settings import Settings, SettingsError, option

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineSettings(Settings):
    """``local``: this process and its DataLoader workers; ``ray``: Ray Data on a Ray cluster."""

    stage = "engine"

    engine: str = option(
        "local",
        "local: this process (default); ray: a Ray cluster (embed: decoding in CPU tasks, the "
        "model in an actor pool; score: actors that write their own parts; cluster: each EM "
        "pass mapped over the shards) (pip install 'ctfp[ray]')",
        choices=ENGINES,
    )
    actors: int | None = option(
        None,
        "--engine ray: workers (embed: model actors, default one per GPU of the cluster, else 1; "
        "score: actors, default one per GPU, else one per node; cluster: tasks at a time, "
        "default one per CPU)",
        minimum=1,
    )
    ray_address: str | None = option(
        None,
        "--engine ray: cluster to join (auto, HOST:PORT, ray://HOST:PORT; default: start a local "
        "Ray)",
    )

    def validate(self) -> None:
        if self.engine == "local" and (self.actors is not None or self.ray_address is not None):
            raise SettingsError(
                "--actors and --ray-address (actors, ray_address) need --engine ray"
            )


__all__ = ["ENGINES", "EngineSettings"]
