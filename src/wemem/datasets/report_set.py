"""``ReportSetDataset``: the reports of one run, written as one unit.

The reports (comparison CSV and Markdown, time-cost table, plots) are one node's outputs; saved
one by one, a failure in the fourth would leave the first three with a new version and the
others without, so the "latest" reports would no longer belong to one run. This dataset stages
every member to a temporary file first and renames them only when all were written; a failure
while staging renames nothing, and a failure while renaming removes the members already renamed.
"""

from __future__ import annotations

import logging
from typing import Any, NewType

from kedro.io.core import AbstractDataset, DatasetError, Version

from ._base import FileDataset

__all__ = ["ReportSetDataset", "HTMLPreview"]

HTMLPreview = NewType("HTMLPreview", str)
"""kedro-viz renders a ``preview()`` annotated with a type of this name as an HTML page
(the name is what it reads; kedro_datasets._typing has the same one)."""

log = logging.getLogger(__name__)


class ReportSetDataset(AbstractDataset):
    """A dict ``{member: data}`` saved to one versioned file dataset per member.

    Example catalog entry (``versioned: true`` versions every member with the run's version)::

        reports:
          type: wemem.datasets.ReportSetDataset
          versioned: true
          members:
            defense_comparison: {type: wemem.datasets.CSVDataset, filepath: data/08_reporting/defense_comparison.csv}
            roc_curves_plot: {type: wemem.datasets.FigureDataset, filepath: data/08_reporting/roc_curves.png}

    Every member must be a :class:`~wemem.datasets._base.FileDataset` (the project's atomic
    datasets). Loading gives ``{member: data}`` of each member's latest version.
    """

    def __init__(
        self,
        *,
        members: dict[str, dict[str, Any]],
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not members:
            raise DatasetError("ReportSetDataset needs at least one entry under 'members'")
        self.metadata = metadata
        self._version = version
        self.members: dict[str, FileDataset] = {}
        for name, config in members.items():
            config = dict(config)
            if version is not None:
                config["versioned"] = True
            dataset = AbstractDataset.from_config(
                name, config, version.load if version else None, version.save if version else None)
            if not isinstance(dataset, FileDataset):
                raise DatasetError(
                    f"ReportSetDataset member {name!r} is a {type(dataset).__name__}; use one of the project's "
                    "atomic datasets (wemem.datasets.CSVDataset, JSONDataset, TextDataset, FigureDataset, ...)")
            self.members[name] = dataset

    def member_paths(self) -> dict[str, str]:
        """Member name → the path of its latest version (empty for a member never saved)."""
        paths = {}
        for name, dataset in self.members.items():
            try:
                paths[name] = str(dataset._get_load_path())
            except DatasetError:
                continue
        return paths

    def preview(self, member: str = "report_html") -> HTMLPreview:
        """kedro-viz's preview (``kedro viz build --include-previews``): the latest version of the
        HTML member ``member`` (catalog ``metadata: {kedro-viz: {preview_args: {member: ...}}}``)."""
        dataset = self.members.get(member)
        if dataset is None:
            raise DatasetError(f"ReportSetDataset has no member {member!r} to preview; members: {sorted(self.members)}")
        return HTMLPreview(dataset.load())

    def _describe(self) -> dict[str, Any]:
        return {"members": {n: d._describe() for n, d in self.members.items()}, "version": self._version}

    def load(self) -> dict[str, Any]:
        return {name: dataset.load() for name, dataset in self.members.items()}

    def save(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or set(data) != set(self.members):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DatasetError(f"ReportSetDataset saves a dict with exactly the members {sorted(self.members)}; got {got}")
        staged: list[tuple[FileDataset, tuple[str, str]]] = []
        try:
            for name, dataset in self.members.items():
                staged.append((dataset, dataset.stage(data[name])))
        except Exception as exc:
            for dataset, (tmp, _) in staged:
                dataset.discard(tmp)
            raise DatasetError(f"no report of this run was written: report {name!r}: {exc}") from exc
        committed: list[tuple[FileDataset, str]] = []
        try:
            for dataset, pair in staged:
                dataset.commit(pair)
                committed.append((dataset, pair[1]))
        except Exception as exc:
            for dataset, path in committed:
                dataset.discard(path)
            for dataset, (tmp, _) in staged[len(committed):]:
                dataset.discard(tmp)
            raise DatasetError(f"no report of this run was written: renaming {pair[1]} failed ({exc})") from exc

    def _exists(self) -> bool:
        return all(dataset.exists() for dataset in self.members.values())
