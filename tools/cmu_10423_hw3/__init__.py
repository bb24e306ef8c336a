"""TA tools for CMU 10-423 HW3 (LoRA for GPT-2): the offline fixture generator."""
