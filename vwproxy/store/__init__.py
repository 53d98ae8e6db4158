"""store layer of vwproxy; see DESIGN.md "Layers"."""
