"""Sampler names users know (A1111 style) mapped onto diffusers schedulers.

A scheduler holds per-run state (step index, multistep history), so every
request gets a fresh one built from the model's scheduler config; sharing one
across threads corrupts results (diffusers #1606, #3672).
"""

from __future__ import annotations

import inspect
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.samplers import find_sampler, sampler_names

# What each sampler name (core/samplers.py) builds: a diffusers class and config overrides.
_CLASSES: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "DDIM": (DDIMScheduler, {}),
    "DDPM": (DDPMScheduler, {}),
    "PNDM": (PNDMScheduler, {"skip_prk_steps": True}),
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler,
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler,
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "UniPC": (UniPCMultistepScheduler, {}),
}
assert set(_CLASSES) == set(sampler_names()), "every sampler name needs a scheduler class"


def make_scheduler(name: str | None, base: SchedulerMixin) -> SchedulerMixin:
    """A fresh scheduler for one request, configured from the model's own."""
    if name is None:
        return base.__class__.from_config(base.config)
    found = find_sampler(name)
    if found is None:
        raise InvalidRequestError(
            f"unknown scheduler {name!r}; choose one of: {', '.join(sampler_names())}"
        )
    cls, overrides = _CLASSES[found.name]
    return cls.from_config(base.config, **overrides)


def scheduler_label(scheduler: SchedulerMixin) -> str:
    """The user-facing name of a scheduler instance (for records and PNG metadata)."""
    karras = bool(getattr(scheduler.config, "use_karras_sigmas", False))
    for name, (cls, overrides) in _CLASSES.items():
        if type(scheduler) is cls and bool(overrides.get("use_karras_sigmas", False)) == karras:
            return name
    return type(scheduler).__name__


def step_accepts_generator(scheduler: SchedulerMixin) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters
