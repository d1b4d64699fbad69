"""`lenstrt bench`: backends side by side, speed and agreement, each configuration in its own process."""
