"""Our addons as one entry in mitmproxy's chain.

mitmproxy creates a coroutine and an error guard per chain entry for every event, whether the addon handles it
or not; nested addons (the `addons` attribute) are walked inside one entry. Grouping our addons saves that per
addon per event on the hot path, while each addon keeps its one concern and its own name (`addons.get(name)`).
"""

from __future__ import annotations


class AigwAddons:
    def __init__(self, *addons: object) -> None:
        self.addons = list(addons)
