"""Cloud: prices (a table shipped as data), cost arithmetic; AWS and SkyPilot launchers later."""
