"""CoT supervised fine-tuning (LLaMA-Factory's recipe keys): config, conversation batches, the trainer, the CLI."""
