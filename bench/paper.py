"""The paper's published numbers (Ye et al., CVPR 2024), for the clearly labelled comparison column.

These values are only ever rendered beside ours under a "paper" heading; nothing computes with them,
tunes on them or writes them into our cells. Rows and columns use the table modules' names.
Datasets the paper did not report (e.g. digits) have no entry, and render as "-".
"""

from __future__ import annotations

_TABLE1 = {
    "mnist": {"Random Select": (3.3, 0.43, 0.07), "Predict-based": (5.5, None, None),
              "Clustering-based": (6.2, None, None), "DDM w/o cluster": (9.1, 0.55, 0.11),
              "DDM-match": (10.8, 0.73, 0.13), "DDM-full": (10.8, 0.73, 0.13)},
    "cifar10": {"Random Select": (2.7, 0.34, 0.54), "Predict-based": (3.1, None, None),
                "Clustering-based": (2.5, None, None), "DDM w/o cluster": (5.9, 0.57, 0.78),
                "DDM-match": (5.8, 0.76, 0.81), "DDM-full": (6.8, 0.81, 0.92)},
    "cifar100": {"Random Select": (2.3, 0.54, 0.8), "Predict-based": (3.9, None, None),
                 "Clustering-based": (3.6, None, None), "DDM w/o cluster": (3.5, 0.77, 1.2),
                 "DDM-match": (4.8, 0.71, 1.6), "DDM-full": (5.3, 0.88, 1.6)},
}
_TABLE2 = {"Random Select": (3.3, 2.7, 2.3), "Koh": (10.0, 5.6, 2.6), "FastIF": (9.8, 6.5, 2.4),
           "Scaleup": (10.4, 6.5, 3.9), "DDM": (10.8, 6.8, 5.3)}
_TABLE2_DATASETS = ("mnist", "cifar10", "cifar100")
_TABLE3 = {"Random Select": (95.7, 95.8, 92.8, 74.6, 65.9), "Koh": (95.7, 95.9, 93.7, 81.5, 74.3),
           "FastIF": (95.7, 95.5, 94.1, 79.6, 74.0), "Scaleup": (95.7, 96.0, 95.2, 82.9, 73.3),
           "DDM": (95.7, 96.2, 95.9, 85.4, 79.3)}
_TABLE4 = {
    "mnist": {"Normal": (12.5, 95.7), "DDM-match": (12.6, 85.0), "DDM": (0.6, 95.7)},
    "cifar10": {"Normal": (12.6, 85.0), "DDM-match": (12.6, 40.2), "DDM": (15.5, 85.0)},
    "cifar100": {"Normal": (2.2, 56.1), "DDM-match": (2.2, 23.5), "DDM": (0.8, 56.1)},
    "tinyimagenet": {"Normal": (1.4, 37.5), "DDM-match": (1.4, 7.8), "DDM": (0.1, 37.5)},
}
# Our rows that stand for the paper's single DDM row: the default and the paper read as written.
_ALIASES = {("table1", "DDM (paper schedule)"): "DDM-full", ("table2", "DDM (paper schedule)"): "DDM",
            ("table4", "DDM (paper schedule)"): "DDM"}
_TABLE6 = {"Random Select": (78.4, 70.5, 68.8, 61.3, 55.7), "DDM": (78.4, 82.0, 79.3, 73.6, 70.1)}
_TABLE7 = {"Random Select": (94.1, 93.5, 88.7, 87.3, 85.8), "DDM": (94.1, 94.2, 94.2, 92.9, 87.3)}


def paper_value(target: str, dataset: str, row: str, column: str, columns: list[str]) -> float | None:
    """The paper's number for this cell, or None when the paper has none."""
    row = _ALIASES.get((target, row), row)
    index = columns.index(column) if column in columns else None
    if index is None:
        return None
    if target == "table1":
        values = _TABLE1.get(dataset, {}).get(row)
    elif target == "table2":
        values = _TABLE2.get(row) if dataset in _TABLE2_DATASETS else None
        return values[_TABLE2_DATASETS.index(dataset)] if values else None
    elif target == "table3":
        values = _TABLE3.get(row) if dataset == "mnist" else None
    elif target == "table4":
        values = _TABLE4.get(dataset, {}).get(row)
    elif target == "table6":
        values = _TABLE6.get(row)
    elif target == "table7":
        values = _TABLE7.get(row) if dataset == "cifar10" else None
    else:
        values = None
    return values[index] if values and index < len(values) else None
