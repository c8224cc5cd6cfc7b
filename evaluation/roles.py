"""What each run of a setting is to the report, from the config (`settings.{setting}.roles`), not from its
name: the baseline (every run's speed-up and first comparison target), the headline run (the headline
comparison with the baseline; the second comparison target of ablations and merges) and the merges."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Roles:
    baseline: str
    headline: str
    merges: tuple[str, ...]

    @property
    def references(self) -> tuple[str, str]:
        """The comparison targets of every run, in table order."""
        return self.headline, self.baseline


def roles_for(config: dict, setting: str, specs) -> Roles:
    """The setting's roles; merges default to the runs whose `groups` put >= 2 modalities in one parameter set."""
    declared = config["settings"][setting].get("roles") or {}
    merges = declared.get("merges")
    if merges is None:
        merges = list(dict.fromkeys(s.base_name for s in specs if s.untie and any(len(g) > 1 for g in s.groups)))
    return Roles(declared.get("baseline", "dense"), declared.get("headline", "mot"), tuple(merges))
