"""Sampler names users know (A1111 style) and their aliases: the vocabulary, without diffusers.

Which diffusers scheduler each name builds is the engine's business (engines/schedulers.py);
a request only needs to know that a name exists, and its canonical spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...] = ()


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DDIM", ("ddim",)),
    Sampler("DDPM", ("ddpm",)),
    Sampler("PNDM", ("pndm", "plms")),
    Sampler("Euler", ("euler", "k_euler")),
    Sampler("Euler a", ("euler_a", "euler_ancestral", "k_euler_a")),
    Sampler("Heun", ("heun", "k_heun")),
    Sampler("DPM++ 2M", ("dpmpp_2m", "dpm++2m", "k_dpmpp_2m")),
    Sampler("DPM++ 2M Karras", ("dpmpp_2m_karras", "k_dpmpp_2m_karras")),
    Sampler("UniPC", ("unipc", "uni_pc")),
)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


_BY_KEY: dict[str, Sampler] = {_key(n): s for s in SAMPLERS for n in (s.name, *s.aliases)}


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def find_sampler(name: str) -> Sampler | None:
    return _BY_KEY.get(_key(name))


def canonical_sampler_name(name: str) -> str:
    """The canonical spelling of a sampler name or alias; ValueError for unknown names."""
    found = find_sampler(name)
    if found is None:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise ValueError(f"unknown scheduler {shown!r}; choose one of: {', '.join(sampler_names())}")
    return found.name
