"""Example task code. Schedule files point at these with dotted paths."""
