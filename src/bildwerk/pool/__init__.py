"""Image pools from a topic: plan (topic -> kinds -> locations -> prompts), run, report.

``plan.py`` is the vocabulary (the human-editable plan file and its items with deterministic
ids); ``planner.py`` writes plans (an OpenAI-compatible chat endpoint, or offline from the
template grammar); ``folder.py`` is a pool's output folder and its resumable manifest;
``render.py`` turns items into job specs and results on the one generation core;
``local.py`` and ``ray_executor.py`` run a plan; ``gates.py``, ``diversity.py`` and
``report.py`` judge and summarise what was made; ``service.py`` runs pools through the job
queue for the REST face.
"""
