"""Running a deployed model on the device, with no torch: NumPy, Pillow and the model's runtime only.

``load(DEPLOYMENT)`` reads the deployment's manifest, checks the model file's SHA-256, opens it in its runtime
and returns a ``Predictor`` that preprocesses image files exactly as the manifest's recipe says
(``slimda.runtime.recipe``). ``slimda predict`` is its command line; ``slimda.runtime.monitor`` watches a site
for drift without labels.
"""

from slimda.runtime.predictor import Predictor, load

__all__ = ["Predictor", "load"]
