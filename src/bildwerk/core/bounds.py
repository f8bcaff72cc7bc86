"""The bounds every request obeys, checked before anything is allocated (DESIGN.md security
checklist). One place, so the request, the prompt options and the REST schemas agree."""

MIN_SIDE = 64
MAX_SIDE = 2048
SIDE_MULTIPLE = 8  # latents are 1/8 of the picture
MAX_STEPS = 150
MAX_IMAGES = 8
MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1
MAX_MODEL_REF_CHARS = 1024
MAX_MASK_BLUR = 256
MAX_MASK_PADDING = 1024
MAX_NAME_CHARS = 200  # style, language, LLM and describer names


def check_side(v: int | None) -> int | None:
    """A picture side within bounds and a multiple of SIDE_MULTIPLE (None: unset), else a
    ValueError whose message reads on from the field's name."""
    if v is None:
        return v
    if not MIN_SIDE <= v <= MAX_SIDE:
        raise ValueError(f"must be between {MIN_SIDE} and {MAX_SIDE} pixels, got {v}")
    if v % SIDE_MULTIPLE:
        low = v - v % SIDE_MULTIPLE
        raise ValueError(f"must be a multiple of {SIDE_MULTIPLE}, got {v} (try {low} or {low + SIDE_MULTIPLE})")
    return v
