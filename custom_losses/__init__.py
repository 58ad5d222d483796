"""The paper's distillation objectives (eqs. 1-8)."""
