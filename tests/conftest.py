"""Suite-wide pytest settings shared by every layer of the test pyramid.

Hypothesis runs a bounded number of examples in `make test` (profile `ci`, derandomised
so a CI run is reproducible) and many more under `make fuzz` (profile `fuzz`); pick one
with HYPOTHESIS_PROFILE (`explore`: the first failure, unshrunk, fast). No deadline:
the examples share two cores with the suite.
"""

import os

from hypothesis import Phase, settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("fuzz", max_examples=3_000, deadline=None)
settings.register_profile(
    "explore",
    max_examples=60,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
