"""Device mesh and the logical-axis rules that place parameters and activations on it; multi-process launch
(`distributed`), per-process data (`data`) and the memory planner (`plan`)."""
