"""Layer 3: orchestration (pipeline of stages, reports); no model or data logic of its own."""
