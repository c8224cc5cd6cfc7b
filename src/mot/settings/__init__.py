"""One module per setting of the study; `objective_for` picks the setting's objective by name."""

from __future__ import annotations

from mot.settings.base import Objective


def objective_for(config: dict, setting: str) -> Objective:
    from mot.settings.chameleon import ChameleonObjective
    from mot.settings.chameleon_speech import ChameleonSpeechObjective
    from mot.settings.transfusion import TransfusionObjective

    objectives = {"chameleon": ChameleonObjective, "chameleon_speech": ChameleonSpeechObjective,
                  "transfusion": TransfusionObjective}
    return objectives[setting](config, setting)
