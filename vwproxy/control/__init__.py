"""control layer of vwproxy; see DESIGN.md "Layers"."""
