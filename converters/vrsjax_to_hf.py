"""Convert a vrsjax checkpoint (or an HF one, to change layout/dtype/sharding) back to HF safetensors.

    python converters/vrsjax_to_hf.py VRSJAX_DIR OUT_DIR [--layout v5|legacy] [--dtype bfloat16] [--max-shard-gb 5]

Same as `vrsjax convert vrsjax-to-hf ...`.
"""

import sys

from vrsjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "vrsjax-to-hf", *sys.argv[1:]]))
