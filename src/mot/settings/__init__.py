"""One module per setting of the study (chameleon, chameleon_speech, transfusion), each binding its Objective
to `OBJECTIVE`; `mot.settings.registry.objective_for` finds a setting's objective by the config."""

from mot.settings.registry import objective_class, objective_for

__all__ = ["objective_class", "objective_for"]
