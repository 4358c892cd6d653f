"""Every magic number of the pipeline and the model, in one place."""

from __future__ import annotations

from pathlib import Path

# Store schema identifier; bump when the layout of a version changes.
STORE_SCHEMA = "colorfeat/1"

# CIELAB quantisation (Zhang et al. 2016; Manjunatha et al. 2018).
AB_MIN = -120
AB_MAX = 120
AB_STEP = 10
AB_BINS_PER_AXIS = (AB_MAX - AB_MIN) // AB_STEP + 1  # 25
NUM_AB_BINS = AB_BINS_PER_AXIS * AB_BINS_PER_AXIS  # 625
L_CENTER = 50.0
TARGET_STRIDE = 4  # ab targets live at S/4 x S/4
SOFT_ENCODE_NEIGHBOURS = 5
SOFT_ENCODE_SIGMA = 5.0

# Class rebalancing (the paper's values).
REBALANCE_ALPHA = 1.0
REBALANCE_GAMMA = 0.5

# Decoding.
ANNEALED_T = 0.38

# Backbone input.
DEFAULT_IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma, used to turn RGB into the grayscale the backbone sees.
LUMA_601 = (0.299, 0.587, 0.114)

# Pictures from a source are hostile input: both limits are checked before anything is decoded.
# 64 megapixels lets a 48-megapixel camera photo through; its RGB alone then takes 192 MiB.
MAX_PICTURE_PIXELS = 64 * 1024 * 1024  # width x height, read from the file's header
MAX_PICTURE_BYTES = 256 * 1024 * 1024  # the file's size

# Vocabulary specials.
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0
UNK_ID = 1

# Word embeddings.
EMBEDDING_DIM = 300

# Shipped artifacts.
PRIORS_DIR = Path(__file__).resolve().parent.parent / "priors"
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "data"

# On CPU, torch.compile (inductor, frozen weights) costs ~30 s once; end to end it then ran at the
# speed of eager bf16 (benchmarks/extract.py, 2-core CPU) but no slower, and it is where further
# kernel fusion comes from: only from a few thousand images on.
COMPILE_MIN_IMAGES = 2000
