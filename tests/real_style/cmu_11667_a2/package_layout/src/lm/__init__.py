"""The language model package (src/lm/), as later offerings of the course lay it out."""
