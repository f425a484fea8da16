"""Constants shared by the inference tests."""

SEGMENTER_ARGS = ["--sam2-random", "--sam2-config", "hiera_t", "--sam2-image-size", "64", "--seed", "3"]
"""The command-line twin of tests/services/sam2_cases.SAM2_TEST_OPTIONS (hiera_t, input size 64, seed 3)."""
