"""TA tools for Mila IFT6135 A2: data slice, mutants, learning-curve plots."""
