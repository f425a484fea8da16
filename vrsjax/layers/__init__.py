"""Building blocks shared by the models: Linear/Embed with logical axes, RMSNorm, rotary, attention."""
