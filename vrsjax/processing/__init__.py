"""Turning frames and text into model inputs. `patchify` holds the image math shared with the processor."""
