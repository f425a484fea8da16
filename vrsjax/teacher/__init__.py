"""Teacher-model data construction: an OpenAI-compatible client (`client`), Veason-R1 CoT traces (`cot`), VideoSeg-R1
difficulty ratings (`difficulty`), and the `vrsjax data cot|difficulty` runs (`commands`)."""
