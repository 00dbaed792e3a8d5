"""Reports of a study: tables, markdown and CSV, plotly figures, the HTML page, comparisons, and what
optuna-dashboard shows (notes, figures, serving)."""
