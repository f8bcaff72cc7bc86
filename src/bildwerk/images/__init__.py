"""Pure image utilities: decoding with limits, masks, crop-and-paste-back, PNG metadata."""

from bildwerk.images.crop import (
    CropBox,
    InpaintCrop,
    composite_full,
    context_box,
    crop_for_inpaint,
    paste_back,
)
from bildwerk.images.io import (
    DATASET_LIMITS,
    DEFAULT_LIMITS,
    ImageLimits,
    base64_image_bytes,
    decode_base64_image,
    decode_image,
    encode_png,
    load_image_file,
    read_image_file,
    to_rgb,
)
from bildwerk.images.masks import (
    MaskSource,
    dilate_mask,
    feather_mask,
    mask_bbox,
    mask_is_empty,
    normalize_mask,
)
from bildwerk.images.metadata import (
    PARAMETERS_KEY,
    RECORD_KEY,
    format_a1111_parameters,
    parse_a1111_parameters,
    png_with_metadata,
    read_png_metadata,
)

__all__ = [
    "DATASET_LIMITS",
    "DEFAULT_LIMITS",
    "PARAMETERS_KEY",
    "RECORD_KEY",
    "CropBox",
    "ImageLimits",
    "InpaintCrop",
    "MaskSource",
    "base64_image_bytes",
    "composite_full",
    "context_box",
    "crop_for_inpaint",
    "decode_base64_image",
    "decode_image",
    "dilate_mask",
    "encode_png",
    "feather_mask",
    "format_a1111_parameters",
    "load_image_file",
    "mask_bbox",
    "mask_is_empty",
    "normalize_mask",
    "parse_a1111_parameters",
    "paste_back",
    "png_with_metadata",
    "read_image_file",
    "read_png_metadata",
    "to_rgb",
]
