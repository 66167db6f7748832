"""What the web side (app's domains) and the workers both need, importing neither: domain errors, the tasks
the web side asks the workers for, source descriptors, the bundle archive's plan.

`app` never imports `workers`; `workers` may use app's services and models but never its pages or api. The
import contracts in pyproject.toml ([tool.importlinter]) check both, and that this package stays below both.
"""
