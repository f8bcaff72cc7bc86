"""Sampler names users know (A1111 style) mapped onto diffusers schedulers.

A scheduler holds per-run state (step index, multistep history), so every
request gets a fresh one built from the model's scheduler config; sharing one
across threads corrupts results (diffusers #1606, #3672).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
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

from bildwerk.errors import InvalidRequestError


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    cls: type[SchedulerMixin]
    overrides: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


SCHEDULERS: tuple[SchedulerSpec, ...] = (
    SchedulerSpec("DDIM", DDIMScheduler, {}, ("ddim",)),
    SchedulerSpec("DDPM", DDPMScheduler, {}, ("ddpm",)),
    SchedulerSpec("PNDM", PNDMScheduler, {"skip_prk_steps": True}, ("pndm", "plms")),
    SchedulerSpec("Euler", EulerDiscreteScheduler, {}, ("euler", "k_euler")),
    SchedulerSpec("Euler a", EulerAncestralDiscreteScheduler, {}, ("euler_a", "euler_ancestral", "k_euler_a")),
    SchedulerSpec("Heun", HeunDiscreteScheduler, {}, ("heun", "k_heun")),
    SchedulerSpec(
        "DPM++ 2M",
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        ("dpmpp_2m", "dpm++2m", "k_dpmpp_2m"),
    ),
    SchedulerSpec(
        "DPM++ 2M Karras",
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        ("dpmpp_2m_karras", "k_dpmpp_2m_karras"),
    ),
    SchedulerSpec("UniPC", UniPCMultistepScheduler, {}, ("unipc", "uni_pc")),
)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


_BY_KEY: dict[str, SchedulerSpec] = {}
for _spec in SCHEDULERS:
    for _n in (_spec.name, *_spec.aliases):
        _BY_KEY[_key(_n)] = _spec


def scheduler_names() -> list[str]:
    return [s.name for s in SCHEDULERS]


def canonical_scheduler_name(name: str) -> str:
    spec = _BY_KEY.get(_key(name))
    if spec is None:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(scheduler_names())}")
    return spec.name


def make_scheduler(name: str | None, base: SchedulerMixin) -> SchedulerMixin:
    """A fresh scheduler for one request, configured from the model's own."""
    if name is None:
        return base.__class__.from_config(base.config)
    spec = _BY_KEY.get(_key(name))
    if spec is None:
        raise InvalidRequestError(
            f"unknown scheduler {name!r}; choose one of: {', '.join(scheduler_names())}"
        )
    return spec.cls.from_config(base.config, **spec.overrides)


def scheduler_label(scheduler: SchedulerMixin) -> str:
    """The user-facing name of a scheduler instance (for records and PNG metadata)."""
    karras = bool(getattr(scheduler.config, "use_karras_sigmas", False))
    for spec in SCHEDULERS:
        if type(scheduler) is spec.cls and bool(spec.overrides.get("use_karras_sigmas", False)) == karras:
            return spec.name
    return type(scheduler).__name__


def step_accepts_generator(scheduler: SchedulerMixin) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters
