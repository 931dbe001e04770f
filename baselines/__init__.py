"""Every competitor of DDM behind the one ``ddm.attributor.Attributor`` interface.

Importing this package (as any import of a baseline module does) declares them all in
``ddm.attributor.METHODS``; each module is imported when its method is first looked up. The methods
over the field's libraries (``baselines/library.py``) need the ``methods`` extra to run, not to be
declared.
"""

from ddm.attributor import METHODS

MODULES = {
    "exact": "exact", "fastif": "fastif", "koh": "koh", "koh_all": "koh", "scaleup": "scaleup",
    "random": "similarity", "predict": "similarity", "cluster": "similarity",
    "tracin": "tracin", "grad_dot": "tracin", "grad_cos": "tracin", "rps": "rps",  # dattri
    "ekfac": "kfac", "kfac": "kfac",  # kronfluence
    "trak": "trak",  # traker
    "metagradient": "metagradient",  # the linear-response ceiling
}
for _name, _module in MODULES.items():
    METHODS.declare(_name, f"baselines.{_module}")
