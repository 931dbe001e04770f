"""Every competitor of DDM behind the one ``ddm.attributor.Attributor`` interface.

Importing this package registers them all in ``ddm.attributor.METHODS``.
"""

from baselines import exact, fastif, koh, scaleup, similarity  # noqa: F401
