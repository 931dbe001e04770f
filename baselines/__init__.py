"""Every competitor of DDM behind the one ``ddm.attributor.Attributor`` interface.

Importing this package (as any import of a baseline module does) declares them all in
``ddm.attributor.METHODS``; each module is imported when its method is first looked up.
"""

from ddm.attributor import METHODS

for _name, _module in {"exact": "exact", "fastif": "fastif", "koh": "koh", "scaleup": "scaleup",
                       "random": "similarity", "predict": "similarity", "cluster": "similarity"}.items():
    METHODS.declare(_name, f"baselines.{_module}")
