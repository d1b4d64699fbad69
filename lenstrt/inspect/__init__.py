"""`lenstrt inspect`: the candidates of a serve output as a static page people grade from the keyboard.

- `page`: picks the candidates from a serve output (committed catalog parts), re-reads their cutouts,
  writes one colour-composite PNG per candidate (in parallel) and the page data (an index for sorting and
  filtering, per-chunk detail files loaded on demand), atomically, into a self-contained directory;
- `grades`: reads graders' CSV files and merges them (mean grade, modal grade, agreement, Fleiss' kappa);
- `server`: an optional standard-library HTTP server on 127.0.0.1 that serves the page and writes every
  posted grade into SERVE_OUT/grades.csv atomically;
- `static/`: index.html, app.js, style.css (no framework, no build step, no network).
See docs/inspect.md.
"""

from __future__ import annotations

GRADES = {1: "sure lens", 2: "probable lens", 3: "possible lens", 4: "not a lens"}
