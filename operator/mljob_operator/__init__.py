"""mljob-operator: anomaly-detection ML jobs as Kubernetes resources.

`kopf run -m mljob_operator` imports this package; the kopf handlers are registered only
then (when kopf is already loaded), so the pure layers (api, lifecycle, engine, store)
stay importable without pulling in the Kubernetes plumbing.
"""

import sys

if "kopf" in sys.modules:  # loaded by `kopf run -m mljob_operator`
    from mljob_operator import handlers as handlers
    from mljob_operator import kopf_session as kopf_session
