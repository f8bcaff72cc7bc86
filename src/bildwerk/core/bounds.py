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
