"""Convert a Hugging Face Qwen2.5-VL directory (optionally with a PEFT LoRA adapter) to a vrsjax checkpoint.

    python converters/hf_to_vrsjax.py HF_DIR OUT_DIR [--dtype bfloat16] [--adapter LORA_DIR]

Same as `vrsjax convert hf-to-vrsjax ...`.
"""

import sys

from vrsjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "hf-to-vrsjax", *sys.argv[1:]]))
