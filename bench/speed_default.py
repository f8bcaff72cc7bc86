"""Speed of one image on the default model, against plain diffusers in the same run.

    .venv/bin/python bench/speed_default.py [--model PATH] [--steps 20] [--repeats 5]

bildwerk: ``DiffusersEngine.generate`` (prompt encoding, own loop, VAE decode, PNG-ready image).
baseline: diffusers' ``StableDiffusionPipeline.__call__`` on the same components with the same
conditioning passed as ``prompt_embeds`` (the sentence encoder is outside both timings' loop
in the baseline, inside bildwerk's; the report gives both). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch
from machine import cpu_name  # bench/machine.py (scripts run from bench/)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the embedded default)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt", default="ein roter Apfel")
    args = ap.parse_args()

    from bildwerk.core.request import build_request
    from bildwerk.engines.conditioning import encode_prompts
    from bildwerk.engines.diffusers_engine import DiffusersEngine
    from bildwerk.models.loader import ModelManager

    engine = DiffusersEngine(ModelManager())
    req = dict(prompt=args.prompt, model=args.model, steps=args.steps, scheduler=None)
    engine.generate(build_request(seed=0, **req))  # load + warm up
    model = engine.models.get(args.model)

    ours = []
    for i in range(args.repeats):
        t = time.perf_counter()
        engine.generate(build_request(seed=i, **req))
        ours.append(time.perf_counter() - t)

    cond = encode_prompts(model, args.prompt, "", num_images=1, do_cfg=True,
                          width=model.native_size, height=model.native_size)
    pipe = model.pipe
    pipe.set_progress_bar_config(disable=True)
    kwargs = {}
    if model.family == "sentence":
        kwargs = {"prompt_embeds": cond.cond, "negative_prompt_embeds": cond.uncond}
    else:
        kwargs = {"prompt": args.prompt}
    pipe(num_inference_steps=args.steps, output_type="pil", **kwargs)  # warm up
    base = []
    for i in range(args.repeats):
        g = torch.Generator("cpu").manual_seed(i)
        t = time.perf_counter()
        pipe(num_inference_steps=args.steps, generator=g, output_type="pil", **kwargs)
        base.append(time.perf_counter() - t)

    med_ours, med_base = statistics.median(ours), statistics.median(base)
    print(f"date: {datetime.date.today()}  machine: {cpu_name()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {model.device}")
    print(f"model: {model.name} ({model.native_size}x{model.native_size}), {args.steps} steps, "
          f"median of {args.repeats}")
    print()
    print("| path | seconds per image | ratio to diffusers |")
    print("|---|---|---|")
    print(f"| bildwerk engine (encode + loop + decode) | {med_ours:.3f} | {med_ours / med_base:.2f} |")
    print(f"| diffusers StableDiffusionPipeline (prompt_embeds given) | {med_base:.3f} | 1.00 |")


if __name__ == "__main__":
    main()
