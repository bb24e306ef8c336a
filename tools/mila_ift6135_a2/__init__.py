"""TA tools for Mila IFT6135 A2: data slice, learning-curve plots."""
