"""Human-readable reports of evaluations and benchmarks: Markdown, figures, and the machine they ran on."""
