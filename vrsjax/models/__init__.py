"""Model families. `from vrsjax.models import qwen2_5_vl` gives the Qwen2.5-VL policy."""
